"""``python -m benchmarks e2e``: VideoDiT against diffusers' ``LatteTransformer3DModel``, one training step.

The two models are built at matched architectures (same parameter count, checked and reported):
width and heads of the preset, ``2N`` VideoDiT blocks (alternating spatial/temporal, starting
spatial) for Latte's ``num_layers=N`` (N spatial + N temporal blocks), ``adaln_single``
modulation, text conditioning through a caption projection of ``caption_channels``, cross-attention
in the spatial blocks only, learned sigma (8 output channels), tanh-GELU MLP, biased projections,
sincos positions (temporal table added once before the first temporal block in both).

One step is forward + MSE loss + backward. Per variant (eager / torch.compile, with / without
activation checkpointing), the models are timed in the same process in interleaved rounds, and the
ratio to Latte is the median of per-round ratios. Memory: bytes saved for backward
(saved_tensors_hooks; parameters excluded) for every variant, plus live bytes held after forward
and peak live bytes (a dispatch-mode tracker) for eager variants. ``videodit[torch]`` (every fused
op forced to the torch reference) shows what the fused kernels bring over the reference path.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from . import memory, timing
from .backend_probe import load_backends

log = logging.getLogger("benchmarks.e2e")

GOAL_RATIO = 0.5  # issue 7: step time and saved activations <= 0.5x diffusers Latte


@dataclass(frozen=True)
class E2EShape:
    """A matched VideoDiT / Latte pair and its input."""

    name: str
    width: int
    heads: int
    num_layers: int  # Latte's num_layers N; VideoDiT depth = 2N
    frames: int
    latent_hw: int
    caption_channels: int
    text_len: int
    batch: int = 1
    in_channels: int = 4
    patch: int = 2

    @property
    def tokens(self) -> int:
        return self.batch * self.frames * (self.latent_hw // self.patch) ** 2


SHAPES = {
    # S/2 width at 16x32x32 latents; 2 Latte layers (4 VideoDiT blocks) keep a CPU step at seconds.
    "cpu": E2EShape("S/2 (N=2) 16x32x32", 384, 6, 2, 16, 32, 4096, 120),
    # Latte-S/2 at full depth (12 layers), batch 2.
    "cuda": E2EShape("S/2 (N=12) 16x32x32", 384, 6, 12, 16, 32, 4096, 120, batch=2),
    "quick": E2EShape("tiny (N=1) 4x8x8", 64, 2, 1, 4, 8, 32, 8),
}


def build_videodit(s: E2EShape, backend: str, checkpointing: bool, recompute: str = "none") -> torch.nn.Module:
    from dit_video import VideoDiT, VideoDiTConfig

    cfg = VideoDiTConfig(in_channels=s.in_channels, num_frames=s.frames, sample_size=[s.latent_hw, s.latent_hw],
                         patch_size=[1, s.patch, s.patch], hidden_size=s.width, depth=2 * s.num_layers,
                         num_heads=s.heads, modulation="adaln_single", conditioning="text",
                         caption_channels=s.caption_channels, learn_sigma=True, kernel_backend=backend,
                         gradient_checkpointing=checkpointing, recompute=recompute,
                         temporal_position="first_temporal")  # as Latte
    return VideoDiT(cfg)


def build_latte(s: E2EShape, checkpointing: bool) -> torch.nn.Module:
    from diffusers import LatteTransformer3DModel

    m = LatteTransformer3DModel(
        num_attention_heads=s.heads, attention_head_dim=s.width // s.heads, in_channels=s.in_channels,
        out_channels=2 * s.in_channels, num_layers=s.num_layers, cross_attention_dim=s.width, attention_bias=True,
        sample_size=s.latent_hw, patch_size=s.patch, activation_fn="gelu-approximate", norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=s.caption_channels, video_length=s.frames)
    if checkpointing:
        m.enable_gradient_checkpointing()
    return m


@dataclass
class Batch:
    x: torch.Tensor
    t: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor  # [B, L] bool, True = attend
    bias: torch.Tensor  # the same mask as Latte takes it: additive [B*T, 1, L]
    target: torch.Tensor


def make_batch(s: E2EShape, device: str, dtype: torch.dtype) -> Batch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch, s.in_channels, s.frames, s.latent_hw, s.latent_hw, generator=g).to(device, dtype)
    t = torch.randint(0, 1000, (s.batch,), generator=g).float().to(device)
    text = torch.randn(s.batch, s.text_len, s.caption_channels, generator=g).to(device, dtype)
    mask = torch.ones(s.batch, s.text_len, dtype=torch.bool, device=device)
    mask[:, max(1, (3 * s.text_len) // 4):] = False
    bias = ((~mask).to(dtype) * -10000.0)[:, None].repeat_interleave(s.frames, 0)
    target = torch.randn(s.batch, 2 * s.in_channels, s.frames, s.latent_hw, s.latent_hw, generator=g).to(device)
    return Batch(x, t, text, mask, bias, target)


def _forward(kind: str, model: Callable, b: Batch) -> Callable[[], torch.Tensor]:
    if kind == "latte":
        def fwd() -> torch.Tensor:
            out = model(b.x, timestep=b.t, encoder_hidden_states=b.text, encoder_attention_mask=b.bias,
                        return_dict=False)[0]
            return F.mse_loss(out.float(), b.target)
    else:
        def fwd() -> torch.Tensor:
            return F.mse_loss(model(b.x, b.t, text=b.text, text_mask=b.mask).float(), b.target)
    return fwd


def _step(fwd: Callable[[], torch.Tensor], params: list[torch.nn.Parameter]) -> Callable[[], None]:
    def step() -> None:
        for p in params:
            p.grad = None
        fwd().backward()
    return step


def auto_choices(s: E2EShape, device: str, dtype: torch.dtype) -> dict[str, str]:
    """Which backend ``auto`` picks for each fused op at this model's shapes, in training (inputs that need
    gradients: the layouts of a training step; auto measures them, or reads the decision a step already made)."""
    from dit_video import kernels

    b, t, hw, h = s.batch, s.frames, (s.latent_hw // s.patch) ** 2, s.heads
    d = s.width // h
    g = dict(device=device, dtype=dtype, requires_grad=True)
    q, k, v = torch.empty(b, t, hw, 3, h, d, **g).unbind(3)
    x = torch.empty(b, t, hw, s.width, **g)
    m = torch.empty(b, s.width, **g)
    kv = torch.empty(b, 1, s.text_len, 2, h, d, **g).unbind(3)
    mask = torch.ones(b, 1, s.text_len, dtype=torch.bool, device=device)
    calls = {
        "attention/spatial": ("attention", (q, k, v), {}),
        "attention/temporal": ("attention", tuple(z.transpose(1, 2) for z in (q, k, v)), {}),
        "attention/cross": ("attention", (q, *kv), {"key_padding_mask": mask}),
        "gated_residual_adaln": ("gated_residual_adaln", (x, x, m, m, m), {}),
        "adaln_modulate": ("adaln_modulate", (x, m, m), {}),
    }
    out = {}
    for name, (op, args, kw) in calls.items():
        try:
            out[name] = kernels.resolve(op, "auto", *args, **kw).backend
        except Exception as e:  # noqa: BLE001
            out[name] = f"error: {e}"
    return out


def run_variant(s: E2EShape, device: str, dtype: torch.dtype, compiled: bool, checkpointing: bool,
                quick: bool, budget_s: float) -> list[dict]:
    """Rows for one (compile, checkpointing) variant: each model's step time, ratio and memory."""
    b = make_batch(s, device, dtype)
    models: dict[str, torch.nn.Module] = {}
    torch.manual_seed(0)
    models["videodit[auto]"] = build_videodit(s, "auto", checkpointing)
    if not compiled and not checkpointing:  # the reference path, once: what the fused kernels bring
        torch.manual_seed(0)
        models["videodit[torch]"] = build_videodit(s, "torch", checkpointing)
    torch.manual_seed(0)
    models["latte"] = build_latte(s, checkpointing)
    variant = {"compile": compiled, "checkpointing": checkpointing}
    rows, steps, fwds, params = [], {}, {}, {}
    for name, m in models.items():
        m.to(device=device, dtype=dtype).train()
        params[name] = list(m.parameters())
        fn = torch.compile(m) if compiled else m
        fwds[name] = _forward("latte" if name == "latte" else "ours", fn, b)
        steps[name] = _step(fwds[name], params[name])
        row = {"suite": "e2e", "name": "videodit_vs_latte", "model": name, "variant": variant,
               "variant_name": f"{'compile' if compiled else 'eager'}{' + ckpt' if checkpointing else ''}",
               "device": device, "dtype": str(dtype).removeprefix("torch."), "shape": asdict(s),
               "tokens": s.tokens, "params": sum(p.numel() for p in params[name]),
               "videodit_depth": 2 * s.num_layers, "latte_num_layers": s.num_layers}
        t0 = time.perf_counter()
        try:
            steps[name]()  # warm-up; under compile this compiles forward and backward
        except Exception as e:  # noqa: BLE001 - a failing model is a row, not a crash
            rows.append(row | {"status": "error", "reason": f"{type(e).__name__}: {e}"[:500]})
            del steps[name]
            continue
        row["warmup_s"] = time.perf_counter() - t0
        rows.append(row | {"status": "ok", "reason": None})
    if not steps:
        return rows
    baseline = "latte" if "latte" in steps else None
    grads = [p for ps in params.values() for p in ps]
    times = timing.time_fns(device, steps, baseline, quick=quick, grad_to_none=grads, budget_s=budget_s)
    for row in rows:
        name = row["model"]
        if row["status"] != "ok":
            continue
        summ = times[name].summary()
        row.update(summ)
        row["ratio_vs_latte"] = row.pop("ratio_vs_baseline")
        row["tokens_per_s"] = s.tokens / (summ["time_ms"] / 1e3)
        saved: dict[str, int] = {}

        def saved_step(fwd: Callable[[], torch.Tensor] = fwds[name], ps: list = params[name],
                       saved: dict[str, int] = saved) -> None:
            saved["bytes"], loss = memory.saved_bytes(fwd, exclude=ps)
            loss.backward()

        for p in params[name]:
            p.grad = None
        if device == "cuda":
            row["cuda_peak_bytes"] = memory.cuda_peak(saved_step)
        else:
            row["peak_rss_delta_bytes"] = memory.peak_rss_delta(saved_step)
        row["saved_bytes"] = saved["bytes"]
        if not compiled:
            for p in params[name]:
                p.grad = None
            row.update(memory.held_bytes(fwds[name], lambda loss: loss.backward()))
        for p in params[name]:
            p.grad = None
    ok = {r["model"]: r for r in rows if r["status"] == "ok"}
    if "latte" in ok:
        for r in ok.values():
            for key in ("saved_bytes", "held_bytes", "peak_live_bytes"):
                if key in r and ok["latte"].get(key):
                    r[key.replace("_bytes", "") + "_ratio_vs_latte"] = r[key] / ok["latte"][key]
    models.clear()
    gc.collect()
    return rows


def step_flops(s: E2EShape, device: str, dtype: torch.dtype) -> int:
    """FLOPs of one VideoDiT fwd + bwd step at ``s``, counted by ``torch.utils.flop_counter`` on the torch
    reference path (every fused op as plain matmuls / SDPA, which the counter knows): GEMMs and attention."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    m = build_videodit(s, "torch", False).to(device=device, dtype=dtype).train()
    step = _step(_forward("ours", m, make_batch(s, device, dtype)), list(m.parameters()))
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def gemm_rate(s: E2EShape, device: str, dtype: torch.dtype, reps: int = 5) -> float:
    """FLOP/s of the step's dominant GEMMs, measured here in ``dtype``: the rate nobody beats in the same dtype.
    For each big linear (``w -> 4w``, ``4w -> w``, ``w -> 3w`` over the step's tokens) the three products a
    training step runs, in the layouts autograd hands them: forward ``[n, k] @ [k, o]``, input gradient
    ``[n, o] @ [o, k]`` and weight gradient ``g^T @ x`` (``[o, n]`` as a transposed view ``@ [n, k]``; BLAS
    libraries reach a different rate on this long-reduction shape). Median per shape, FLOP-weighted mean."""
    w, n = s.width, s.tokens
    total_flops = total_s = 0.0
    for k, o in ((w, 4 * w), (4 * w, w), (w, 3 * w)):
        x, g = (torch.randn(n, c, device=device, dtype=dtype) for c in (k, o))
        wt = torch.randn(o, k, device=device, dtype=dtype)
        products = {"forward": (x, wt.t()), "input_grad": (g, wt), "weight_grad": (g.t(), x)}
        for a, b in products.values():
            ts = timing.time_fns(device, {"gemm": lambda a=a, b=b: a @ b}, None, quick=True, budget_s=3.0)
            total_s += ts["gemm"].summary()["time_ms"] / 1e3
            total_flops += 2.0 * n * k * o
    return total_flops / total_s


def variants(quick: bool) -> list[tuple[bool, bool]]:
    """(compiled, checkpointing) pairs; --quick skips compilation."""
    return [(c, k) for c in ((False,) if quick else (False, True)) for k in (False, True)]


def run(device: str = "cpu", dtype: torch.dtype = torch.float32, quick: bool = False,
        shape: E2EShape | None = None, budget_s: float = 90.0) -> list[dict]:
    """The e2e suite: rows for every variant, plus ``skipped`` rows for variants --quick leaves out."""
    load_backends(device)
    s = shape or SHAPES["quick" if quick else device]
    choices = auto_choices(s, device, dtype)
    flops, rate = step_flops(s, device, dtype), gemm_rate(s, device, dtype)
    floor_ms = flops / rate * 1e3  # the step's FLOPs at the GEMM rate this machine reaches at its shapes
    log.info("e2e: %.1f GFLOP per step, GEMM %.1f GFLOP/s here -> floor %.1f ms", flops / 1e9, rate / 1e9, floor_ms)
    rows: list[dict] = []
    for compiled, ckpt in variants(quick):
        t0 = time.perf_counter()
        for r in run_variant(s, device, dtype, compiled, ckpt, quick, budget_s):
            if r["model"] == "videodit[auto]":
                r["auto_backends"] = choices
            if r["model"].startswith("videodit"):
                r |= {"step_gflop": flops / 1e9, "gemm_gflops": rate / 1e9, "floor_ms": floor_ms}
                if r.get("time_ms"):
                    r["x_floor"] = r["time_ms"] / floor_ms
            rows.append(r)
        log.info("e2e: compile=%s checkpointing=%s done in %.1fs", compiled, ckpt, time.perf_counter() - t0)
    if quick:
        for ckpt in (False, True):
            rows.append({"suite": "e2e", "name": "videodit_vs_latte", "model": "*", "device": device,
                         "dtype": str(dtype).removeprefix("torch."), "shape": asdict(s), "tokens": s.tokens,
                         "variant": {"compile": True, "checkpointing": ckpt},
                         "variant_name": f"compile{' + ckpt' if ckpt else ''}", "status": "skipped",
                         "reason": "--quick does not time torch.compile (compilation takes minutes on CPU)"})
    return rows
