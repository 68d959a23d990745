"""Run under torchrun: a tiny VideoDiT with sequence parallelism over all ranks vs the same model on one rank.

Writes ``OUT/rank<r>.json``: for each case, the max |difference| of the output and of every parameter
gradient (summed over the group) against the single-process model, and the reference scales.
"""

import copy
import json
import os
import sys

import torch
import torch.distributed as dist

from dit_video import VideoDiT, VideoDiTConfig
from dit_video.parallel import build_layout

CASES = {
    "factorized-sincos-text": dict(attention="factorized", conditioning="text", caption_channels=12),
    "factorized-rope-perframe": dict(attention="factorized", positions="rope3d", modulation="adaln_single"),
    "full-ulysses": dict(attention="full", depth=2, conditioning="class", num_classes=3),
    "factorized-checkpointing": dict(attention="factorized", gradient_checkpointing=True, qk_norm=True),
}


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    layout = build_layout(world, rank, world)
    report = {}
    for name, over in CASES.items():
        cfg = VideoDiTConfig.from_preset("tiny", **{**dict(depth=4, hidden_size=32, num_heads=4, sample_size=[8, 8],
                                                         num_frames=4, patch_size=[1, 2, 2]), **over})
        torch.manual_seed(0)
        ref = VideoDiT(cfg).train()
        with torch.no_grad():  # DiT's init zeroes the output paths: perturb so every parameter matters
            for p in ref.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model = copy.deepcopy(ref).set_sequence_parallel(layout.sp)
        g = torch.Generator().manual_seed(1)
        b = 2
        x = torch.randn(b, 3, cfg.num_frames, 8, 8, generator=g)
        t = torch.rand(b, cfg.num_frames, generator=g) * 1000  # per-frame timesteps
        kw = {}
        if cfg.conditioning == "text":
            kw["text"] = torch.randn(b, 5, cfg.caption_channels, generator=g)
            kw["text_mask"] = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
        if cfg.conditioning == "class":
            kw["labels"] = torch.tensor([0, 2])
        cot = torch.randn(b, cfg.out_dim, cfg.num_frames, 8, 8, generator=g)
        out = model(x, t, **kw)
        (out * cot).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        for v in grads.values():
            dist.all_reduce(v)  # the group's gradient is the sum of its ranks' shares
        out_ref = ref(x, t, **kw)
        (out_ref * cot).sum().backward()
        row = {"out": (out - out_ref).abs().max().item(), "out_scale": out_ref.abs().max().item(), "grads": {}}
        for n, p in ref.named_parameters():
            row["grads"][n] = [(grads[n] - p.grad).abs().max().item(), p.grad.abs().max().item()]
        report[name] = row
    json.dump(report, open(os.path.join(out_dir, f"rank{rank}.json"), "w"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
