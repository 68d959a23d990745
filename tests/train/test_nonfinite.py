"""train.nonfinite: a NaN in the data or in a gradient never reaches the weights, on 1 and 2 ranks, fp32 and bf16.

A skipped step leaves the parameters, the optimizer state, the LR and the EMA bitwise unchanged and
does not advance the step counter; ``stop`` raises after ``max_skips_in_row`` in a row, naming the clips.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import DEMO, ROOT, tiny_overrides

from dit_video.train.config import load_train_config


def _flat(obj, prefix=""):
    """Every tensor and number in a nested state, by path."""
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj.detach().clone()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_flat(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj
    return out


def snapshot(trainer) -> dict:
    e = trainer.engine
    return {"params": _flat({n: p for n, p in e.module.named_parameters()}),
            "optim": _flat(e.optimizer.state_dict()), "ema": _flat(trainer.ema.state_dict()),
            "lr": e.get_lr()[0], "step": trainer.step}


def same(a: dict, b: dict) -> bool:
    def eq(x, y):
        return torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y or (x != x and y != y)

    return all(a[k].keys() == b[k].keys() and all(eq(a[k][j], b[k][j]) for j in a[k] if j not in ATTEMPTS)
               for k in ("params", "optim", "ema")) and a["lr"] == b["lr"] and a["step"] == b["step"]


# bf16 without ZeRO runs DeepSpeed's FP16_UnfusedOptimizer: its loss scaler counts attempted steps (``cur_iter``,
# the window of a dynamic fp16 loss scale; bf16's scale is static) whether or not they were applied. It touches
# no weight, moment or LR, so it is the one entry a skipped step may change; the scale itself is still compared.
ATTEMPTS = {".cur_iter"}


def _trainer(shards, out, *extra):
    from dit_video.data import make_loader
    from dit_video.train.trainer import Trainer

    cfg = load_train_config(DEMO, tiny_overrides(shards, out, "optim.warmup_steps=0", "diffusion.cfg_dropout=0.0",
                                                 *extra))
    batches = list(itertools.islice(iter(make_loader(cfg.data)), 6))
    return Trainer(cfg, loader=batches), batches


def _nan_video(batch):
    bad = dict(batch)
    bad["video"] = torch.full(batch["video"].shape, float("nan"))
    return bad


@pytest.mark.parametrize("precision,stage", [("fp32", 2), ("bf16", 2), ("fp32", 0), ("bf16", 0), ("fp32", 3)])
@pytest.mark.parametrize("where", ["data", "gradient"])
def test_a_nonfinite_step_changes_nothing(tmp_path, shards, precision, stage, where):
    trainer, batches = _trainer(shards, tmp_path, f"train.precision={precision}", f"train.zero_stage={stage}",
                                "train.nonfinite=skip")
    poison = {"on": False}
    if where == "data":
        batches[1] = _nan_video(batches[1])
    else:  # a NaN appears in one parameter's gradient during backward
        p = next(p for n, p in trainer.engine.module.named_parameters() if n.endswith("final_linear.weight"))
        p.register_hook(lambda g: g * float("nan") if poison["on"] else g)
    it = iter(batches)
    first = trainer.train_step(it)
    assert first["applied"] == 1.0 and trainer.step == 1
    before = snapshot(trainer)
    poison["on"] = True
    skipped = trainer.train_step(it)
    poison["on"] = False
    assert skipped["applied"] == 0.0 and trainer.guard.skipped == 1 and trainer.step == 1
    assert same(before, snapshot(trainer)), "a skipped step changed parameters, optimizer, LR or EMA"
    after = trainer.train_step(it)
    assert after["applied"] == 1.0 and trainer.step == 2 and after["skipped_total"] == 1.0
    assert not same(before, snapshot(trainer))  # a real step does change them (the snapshot can fail)
    assert trainer._rank_state()["nonfinite"] == {"skipped": 1, "in_row": 0, "spikes": 0}


def test_stop_policy_raises_after_k_in_a_row_naming_the_clips(tmp_path, shards):
    from dit_video.train.nonfinite import NonFiniteError

    trainer, batches = _trainer(shards, tmp_path, "train.nonfinite=stop", "train.max_skips_in_row=2")
    batches[1], batches[2] = _nan_video(batches[1]), _nan_video(batches[2])
    it = iter(batches)
    trainer.train_step(it)
    assert trainer.train_step(it)["applied"] == 0.0  # the first in a row is skipped
    with pytest.raises(NonFiniteError) as e:
        trainer.train_step(it)
    msg = str(e.value)
    assert "2 non-finite steps in a row after step 1" in msg and batches[2]["key"][0] in msg
    assert trainer.step == 1


WORKER = r'''
import json, os, sys, itertools, torch
sys.path.insert(0, os.environ["TESTS_DIR"])
from train_helpers import DEMO, tiny_overrides
from dit_video.train.config import load_train_config
from dit_video.train.trainer import Trainer
from dit_video.data import make_loader
from dit_video.train.nonfinite import NonFiniteError
out, shards, policy, precision = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
cfg = load_train_config(DEMO, tiny_overrides(shards, out, "optim.warmup_steps=0", "diffusion.cfg_dropout=0.0",
                                             f"train.nonfinite={policy}", "train.max_skips_in_row=2",
                                             f"train.precision={precision}"))
rank = int(os.environ["RANK"])
batches = list(itertools.islice(iter(make_loader(cfg.data, rank, 2)), 5))
if rank == 1:  # only rank 1 sees bad data, at its second and third batches
    for i in (1, 2):
        batches[i] = dict(batches[i], video=torch.full(batches[i]["video"].shape, float("nan")))
t = Trainer(cfg, loader=batches)
it = iter(batches)
applied, err = [], None
try:
    for _ in range(4):
        applied.append(t.train_step(it)["applied"])
except NonFiniteError as e:
    err = str(e)
flat = torch.cat([p.detach().float().flatten() for p in t.engine.module.parameters()])
json.dump({"applied": applied, "step": t.step, "skipped": t.guard.skipped, "err": err,
           "params": flat.double().sum().item(), "first": flat[:8].tolist()}, open(f"{out}/rank{rank}.json", "w"))
'''


@pytest.mark.parametrize("policy,precision", [("skip", "fp32"), ("skip", "bf16"), ("stop", "fp32")])
def test_two_ranks_skip_together(tmp_path, shards, policy, precision):
    from dit_video.train.distributed import free_port

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TESTS_DIR": str(Path(__file__).parent)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), str(script), str(tmp_path), str(shards), policy, precision]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    if policy == "skip":
        assert a["applied"] == b["applied"] == [1.0, 0.0, 0.0, 1.0]
        assert a["step"] == b["step"] == 2 and a["skipped"] == b["skipped"] == 2
    else:  # both ranks stop at the same step, each naming its own batch
        assert a["applied"] == b["applied"] == [1.0, 0.0] and a["step"] == b["step"] == 1
        assert a["err"] and b["err"] and "2 non-finite steps in a row" in a["err"]
    assert a["first"] == b["first"] and a["params"] == b["params"]  # the ranks' weights stayed identical
