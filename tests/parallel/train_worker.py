"""Run under torchrun (or alone): train a tiny recipe for N steps on a fixed list of global batches.

    python train_worker.py OUT SHARDS STAGE SP GLOBAL_BATCH STEPS [extra overrides...]

Each data-parallel rank d (of dp = world / SP) takes rows d*b .. (d+1)*b of every global batch, so any
world size trains on the same clips in the same steps. Rank 0 writes OUT/result.json: the logged
(rank-mean) losses, the final weights' checksum and first values, and the per-rank ZeRO bytes.
"""

import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "train"))
from train_helpers import DEMO, tiny_overrides  # noqa: E402

from dit_video.data import make_loader  # noqa: E402
from dit_video.train.config import load_train_config  # noqa: E402
from dit_video.train.memory import zero_bytes  # noqa: E402
from dit_video.train.trainer import Trainer  # noqa: E402


def main(out: str, shards: str, stage: str, sp: str, global_batch: str, steps: str, *extra: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    sp, gb, steps = int(sp), int(global_batch), int(steps)
    dp = world // sp
    b = gb // dp
    common = [f"train.zero_stage={stage}", "train.precision=fp32", "train.deterministic=true",
              f"parallel.sequence_parallel={sp}", "optim.warmup_steps=0", "train.ckpt_every=1000",
              f"train.steps={steps}", *extra]
    cfg = load_train_config(DEMO, tiny_overrides(shards, out, f"data.batch_size={b}", *common))
    src = load_train_config(DEMO, tiny_overrides(shards, out, f"data.batch_size={gb}", "data.shuffle_buffer=0",
                                                 *common)).data
    n = steps * cfg.train.grad_accum
    batches = list(itertools.islice(iter(make_loader(src)), n))  # the same global batches on every rank
    rank = int(os.environ.get("RANK", "0"))
    d = rank // sp
    mine = [{"video": g["video"][d * b:(d + 1) * b], "caption": g["caption"][d * b:(d + 1) * b],
             "key": g["key"][d * b:(d + 1) * b]} for g in batches]
    trainer = Trainer(cfg, loader=mine)
    live = {}
    step = trainer.engine.step

    def step_and_measure(*a, **k):  # gradients are alive between backward and step: read them there
        if not live:
            live.update(zero_bytes(trainer.engine))
        return step(*a, **k)

    trainer.engine.step = step_and_measure
    it = iter(mine)
    losses, norms = [], []
    for _ in range(steps):
        sc = trainer.train_step(it)
        losses.append(sc["loss"])
        norms.append(sc["grad_norm"])
    flat = torch.cat([p.detach().float().flatten() for p in trainer.ema.shadow.parameters()])
    if rank == 0:
        json.dump({"losses": losses, "grad_norms": norms, "ema_sum": flat.double().sum().item(),
                   "ema_first": flat[:16].tolist(), "bytes": {**zero_bytes(trainer.engine), "grads": live["grads"]},
                   "world": world, "sp": sp}, open(os.path.join(out, "result.json"), "w"))


if __name__ == "__main__":
    main(*sys.argv[1:])
