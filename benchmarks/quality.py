"""``python -m benchmarks quality``: does a small text-conditioned model do what its caption says?

The lab for the diffusion defaults and the demo. Each run trains the demo's model (the recipe
``configs/train/demo.yaml``: VideoDiT + learned TinyTextEncoder + diffusion) in this process, on
in-memory synthetic clips of the demo's vocabulary (:data:`dit_video.data.synthetic.DEMO_CLIPS`),
for a FIXED number of steps (wall time is noise on a shared CPU), with the trainer's recipe
(AdamW, warmup + cosine by steps, gradient clipping, condition dropout, fp32 EMA) but in fp32 and
without DeepSpeed, then scores the EMA weights two ways:

- **probe** (the mechanism): at pure noise (flow ``u = 1``; DDPM the last step) the model's x0
  prediction for each caption, averaged over ``--probe-noises`` draws. Its colour mass (each pixel's
  projection on caption colour - background, clipped to [0, 1]) has a centroid per frame; the
  centroid's shift from the first to the last frame along the caption's direction is compared with
  the same number on the data's conditional mean ``E[x0 | caption]``. ``probe`` = mean over
  captions of predicted / data shift (1: the motion is decided where the sampler decides it; 0:
  the initial noise decides it); ``probe_min`` the worst caption's.
- **check** (what a user sees): one sample per caption per ``--samples`` seed with the recipe's
  sampler, steps and guidance, judged by :func:`dit_video.data.synthetic.check_clip` (one solid
  shape of the captioned colour and shape, moving >= a quarter of the frame the captioned way, on
  the plain background). ``ok`` counts the samples that pass everything.

Variants are named override lists (:data:`VARIANTS`; ``--variants a,b``); positional overrides apply
to every run. Each run appends a JSON line to ``OUT/quality.jsonl``; ``OUT/quality.md`` is the table
over everything in that file (mean and spread over seeds). One torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "quality"

_DDIM = ["sample.sampler=ddim", "sample.steps=32"]  # 32 DDIM calls ~ the flow recipe's 16 Heun steps (31 calls)
# eps / v predict what their names say: the recipe's flow-only ``prediction: x0`` goes back to the default
_DDIM = [*_DDIM, "diffusion.prediction=velocity"]
VARIANTS: dict[str, list[str]] = {
    # flow: densities of the training time u (1 = noise)
    "ln_m0": ["diffusion.timestep_sampling=logit_normal", "diffusion.logit_mean=0.0", "diffusion.logit_std=1.0"],
    "ln_m0.5": ["diffusion.timestep_sampling=logit_normal", "diffusion.logit_mean=0.5", "diffusion.logit_std=1.0"],
    "ln_m1": ["diffusion.timestep_sampling=logit_normal", "diffusion.logit_mean=1.0", "diffusion.logit_std=1.0"],
    "ln_m1.5": ["diffusion.timestep_sampling=logit_normal", "diffusion.logit_mean=1.5", "diffusion.logit_std=1.0"],
    "ln_m2": ["diffusion.timestep_sampling=logit_normal", "diffusion.logit_mean=2.0", "diffusion.logit_std=1.0"],
    "ln_m1_s1.6": ["diffusion.timestep_sampling=logit_normal", "diffusion.logit_mean=1.0", "diffusion.logit_std=1.6"],
    "ln_m1_u0.3": ["diffusion.timestep_sampling=logit_normal", "diffusion.logit_mean=1.0", "diffusion.logit_std=1.0",
                   "diffusion.uniform_share=0.3"],
    "uniform": ["diffusion.timestep_sampling=uniform"],
    "mode_1.29": ["diffusion.timestep_sampling=mode", "diffusion.mode_scale=1.29"],
    "mode_-0.5": ["diffusion.timestep_sampling=mode", "diffusion.mode_scale=-0.5"],
    # SD3's shift s: in training logit-normal(m) becomes logit-normal(m + ln s); sampling steps move to noise
    "ln_m0_shift3": ["diffusion.timestep_sampling=logit_normal", "diffusion.logit_mean=0.0", "diffusion.shift=3.0"],
    # DDPM (eps / v), uniform k, the recipes of the papers
    "eps": ["diffusion.objective=eps", "diffusion.timestep_sampling=uniform", *_DDIM],
    "eps_minsnr5": ["diffusion.objective=eps", "diffusion.timestep_sampling=uniform", "diffusion.min_snr_gamma=5",
                    *_DDIM],
    "v_zsnr": ["diffusion.objective=v", "diffusion.zero_terminal_snr=true", "diffusion.timestep_sampling=uniform",
               *_DDIM],
    "v_zsnr_minsnr5": ["diffusion.objective=v", "diffusion.zero_terminal_snr=true",
                       "diffusion.timestep_sampling=uniform", "diffusion.min_snr_gamma=5", *_DDIM],
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", default="ln_m0,ln_m1", help=f"comma-separated names from {sorted(VARIANTS)}, "
                                                            "or 'recipe' for the recipe as it is")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--steps", type=int, default=1500, help="training steps per run (default 1500)")
    p.add_argument("--clips", type=int, default=2048, help="training clips (data seed 0; default 2048)")
    p.add_argument("--samples", type=int, nargs="+", default=[1000], help="sampling seeds for the check")
    p.add_argument("--probe-noises", type=int, default=8, help="noise draws per caption for the probe")
    p.add_argument("--recipe", type=Path, default=None, help="default configs/train/demo.yaml")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--tag", default="", help="label stored with each run (e.g. the code version under test)")
    p.add_argument("--probe-every", type=int, default=0, help="also probe every N steps (a learning curve)")
    p.add_argument("--data", type=json.loads, default={}, help='JSON overrides of the demo\'s clips, e.g. '
                   '\'{"colors": ["red", "blue"], "shapes": ["square"]}\' (fewer captions)')
    p.add_argument("--two-objects", type=int, default=0, metavar="N",
                   help="also sample N captions of two objects and count them (two_*); train on such clips with "
                        "e.g. --data '{\"max_objects\": 2, \"apart\": true, \"radius\": [0.12, 0.14]}'")
    p.add_argument("overrides", nargs="*", help="recipe overrides for every run, e.g. model.hidden_size=128")


# ---------------------------------------------------------------------------------------------- data
def demo_data(num: int, seed: int, size: int, frames: int, **clip_kw: Any) -> tuple[np.ndarray, list[str]]:
    """``num`` demo clips (uint8 [N, T, H, W, 3]) and captions; clip i depends on (seed, i) only.

    ``clip_kw`` overrides :data:`~dit_video.data.synthetic.DEMO_CLIPS` (e.g. fewer colours)."""
    from dit_video.data.synthetic import DEMO_CLIPS, make_clip

    kw = {**DEMO_CLIPS, **clip_kw}
    clips, caps = [], []
    for i in range(num):
        f, c, _ = make_clip(random.Random(f"{seed}:{i}"), size=size, num_frames=frames, **kw)
        clips.append(f)
        caps.append(c)
    return np.stack(clips), caps


def to_model(frames: np.ndarray):
    """uint8 [N, T, H, W, 3] -> float [N, 3, T, H, W] in [-1, 1]."""
    import torch

    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def data_shifts(clips: np.ndarray, caps: list[str], captions: list[str]) -> dict[str, float]:
    """:func:`~dit_video.data.synthetic.colour_shift` of the data's mean ``E[x0 | caption]``, per caption."""
    from dit_video.data import synthetic

    out = {}
    for c in captions:
        idx = [i for i, k in enumerate(caps) if k == c]
        if not idx:
            raise ValueError(f"no training clip has the caption {c!r}: raise --clips")
        out[c] = synthetic.colour_shift(clips[idx].astype(np.float32).mean(0), c)
    return out


# ---------------------------------------------------------------------------------------------- training
def train_run(cfg, clips, captions: list[str], steps: int, seed: int, every: int = 0, on_every=None):
    """Train the recipe's model for ``steps`` steps on ``clips``; returns (EMA module, diffusion, conditioner, log).

    ``on_every(step, ema_module, diffusion, conditioner)`` runs every ``every`` steps (e.g. a probe curve)."""
    import torch

    from dit_video.diffusion import build_diffusion
    from dit_video.models import VideoDiT
    from dit_video.pipeline.conditioner import ConditionedDiT, Conditioner
    from dit_video.train.ema import EMA
    from dit_video.train.schedule import warmup_cosine

    torch.manual_seed(seed)
    conditioner = Conditioner(cfg.model, cfg.condition)
    module = ConditionedDiT(VideoDiT(cfg.model), conditioner.new_learned_encoder()).train()
    ema = EMA(module, cfg.train.ema_decay, cfg.train.ema_warmup)
    o = cfg.optim
    opt = torch.optim.AdamW(module.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, warmup=o.warmup_steps, total=steps, min_ratio=o.min_lr_ratio))
    diffusion = build_diffusion(cfg.diffusion)
    gen = torch.Generator().manual_seed(seed * 1_000_003)
    gen_drop = torch.Generator().manual_seed(seed * 1_000_003 + 7919)
    dc = cfg.diffusion
    order = np.random.default_rng(seed)
    b = cfg.data.batch_size
    perm, pos = order.permutation(len(clips)), 0
    losses: list[float] = []
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    for step in tqdm(range(steps), desc=f"train seed {seed}", leave=False, mininterval=5):
        if pos + b > len(perm):
            perm, pos = order.permutation(len(clips)), 0
        idx = perm[pos:pos + b]
        pos += b
        x0 = clips[idx]
        # as the trainer: given frames drawn first, their captions drop at their own rate
        given = diffusion.draw_cond_mask(b, x0.shape[2], gen_drop, "cpu")
        drop = conditioner.dropout(b, dc.cfg_dropout, gen_drop, given=None if given is None else given.any(1),
                                   p_given=dc.cond_cfg_dropout)
        kw = conditioner.training_kwargs([captions[i] for i in idx], drop)
        loss, _ = diffusion.training_loss(lambda x, t, cond_mask=None, kw=kw: module(x, t, cond_mask=cond_mask, **kw),
                                          x0, generator=gen, cond_mask=given)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), o.grad_clip)
        opt.step()
        sched.step()
        ema.update(module, step + 1)
        losses.append(float(loss.detach()))
        if every and on_every is not None and (step + 1) % every == 0 and step + 1 < steps:
            on_every(step + 1, ema.shadow.eval(), diffusion, conditioner)
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"loss is {losses[-1]} at step {step + 1}")
    seconds = time.perf_counter() - t0
    tail = losses[-max(1, steps // 10):]
    return ema.shadow.eval(), diffusion, conditioner, {"train_s": seconds, "loss_last10pct": float(np.mean(tail))}


# ---------------------------------------------------------------------------------------------- scoring
def probe(model, diffusion, conditioner, captions: list[str], data_shift: dict[str, float], noises: int,
          shape: tuple[int, ...], seed: int = 12345) -> dict[str, Any]:
    """x0 prediction at pure noise, per caption: its colour-mass shift vs the data's conditional mean's."""
    import torch

    from dit_video.data.synthetic import colour_shift

    gen = torch.Generator().manual_seed(seed)
    per: dict[str, float] = {}
    with torch.no_grad():
        for cap in captions:
            cond, _ = conditioner.sampling_kwargs(model, [cap], None)
            # the mean over noise draws: what the model learned at u = 1 (the optimum, E[x0 | caption], does not
            # depend on the noise; a velocity model's imperfect copy of the noise averages out)
            x0 = diffusion.x0_at_pure_noise(lambda x, t, kw=cond: model(x, t, **kw), (1, *shape), noises, gen)
            pix = ((x0[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 3, 0).numpy()
            per[cap] = colour_shift(pix, cap)
    ratios = [per[c] / data_shift[c] for c in captions]
    return {"probe": float(np.mean(ratios)), "probe_min": float(np.min(ratios)),
            "probe_shift_px": float(np.mean([per[c] for c in captions])),
            "data_shift_px": float(np.mean([data_shift[c] for c in captions])), "probe_per_caption": per}


def _pixels(x) -> list[np.ndarray]:
    """[B, C, T, H, W] in [-1, 1] -> uint8 [T, H, W, C] per clip."""
    from dit_video.pipeline.video import to_uint8_frames

    return [to_uint8_frames(v) for v in x]


def shape_word_probe(model, diffusion, conditioner, clips, caps: list[str], us=(0.5, 0.65, 0.8),
                     seed: int = 54321) -> dict[str, Any]:
    """Does the model read the shape word? Held-out clips noised to each flow time ``u`` in ``us`` (where the
    noisy image no longer shows the corners well), their x0 predictions with the true caption and with the
    other shape word (square <-> circle); the effect is the corner fill with "square" minus with "circle",
    averaged over clips (0: the word is ignored, the image alone decides; up to 1). Per ``u`` and the mean.
    Flow objectives (``x_u = (1 - u) x0 + u eps``)."""
    import torch

    from dit_video.data.synthetic import check_clip

    other = {"square": "circle", "circle": "square"}
    swap = [" ".join(other.get(w, w) for w in c.split()) for c in caps]
    is_square = np.array(["square" in c for c in caps])
    gen = torch.Generator().manual_seed(seed)
    n = diffusion.num_train_timesteps
    per = {}
    with torch.no_grad():
        for u in us:
            xt = (1 - u) * clips + u * torch.randn(clips.shape, generator=gen)
            t = torch.full((len(caps),), u * n)
            fill = {}
            for name, cc in (("true", caps), ("swap", swap)):
                cond, _ = conditioner.sampling_kwargs(model, cc, None)
                x0 = diffusion.x0_eps(xt, t, model(xt, t, **cond).float())[0]
                fill[name] = np.array([check_clip(f, c)["corner_fill"] for f, c in zip(_pixels(x0), cc)])
            effect = np.where(is_square, fill["true"] - fill["swap"], fill["swap"] - fill["true"])
            per[f"{u:g}"] = float(np.nanmean(effect))
    return {"shape_word": float(np.mean(list(per.values()))), "shape_word_per_u": per}


def check(model, diffusion, conditioner, cfg, captions: list[str], seeds: list[int], shape: tuple[int, ...],
          min_shift: float) -> dict[str, Any]:
    """Sample every caption once per seed with the recipe's sampler; count what check_clip passes."""
    import torch

    from dit_video.data.synthetic import DEMO_BACKGROUND, check_clip
    from dit_video.diffusion.sampling import sample

    s = cfg.sample
    keys = ("ok", "one_shape", "shape_ok", "moves", "background_ok")
    counts = dict.fromkeys(keys, 0)
    per: dict[str, int] = dict.fromkeys(captions, 0)
    fills: dict[str, list[float]] = {"square": [], "circle": []}
    with torch.no_grad():
        cond, uncond = conditioner.sampling_kwargs(model, captions, None)
        for sd in seeds:
            def fn(x, t, cond_mask=None, kw=cond):
                return model(x, t, cond_mask=cond_mask, **kw)

            def ufn(x, t, cond_mask=None):
                return fn(x, t, cond_mask, uncond)

            x = sample(diffusion, fn, (len(captions), *shape), sampler=s.sampler, steps=s.steps,
                       generator=torch.Generator().manual_seed(sd), guidance_scale=s.guidance_scale,
                       uncond_model_fn=ufn if s.guidance_scale != 1.0 else None)
            for f, cap in zip(_pixels(x), captions):
                r = check_clip(f, cap, background=DEMO_BACKGROUND, min_shift=min_shift)
                for k in fills:
                    if k in cap.split() and "corner_fill" in r:  # one-object captions
                        fills[k].append(r["corner_fill"])
                for k in keys:
                    counts[k] += bool(r[k])
                per[cap] += bool(r["ok"])
    # what the user sees of the shape word: square samples' corner fill minus circle samples' (clean clips: ~1)
    sep = float(np.nanmean(fills["square"]) - np.nanmean(fills["circle"])) if all(fills.values()) else float("nan")
    return {**counts, "n": len(captions) * len(seeds), "ok_per_caption": per, "shape_sep": sep}


# ---------------------------------------------------------------------------------------------- driver
def run_one(name: str, overrides: list[str], seed: int, args: argparse.Namespace, data: dict) -> dict[str, Any]:
    from dit_video.train.config import CONFIG_ROOT, load_train_config

    recipe = args.recipe or CONFIG_ROOT / "train" / "demo.yaml"
    cfg = load_train_config(recipe, [*overrides, *args.overrides, f"train.seed={seed}"])
    t, (h, w) = cfg.model.num_frames, cfg.model.sample_size
    key = (h, t)
    if key not in data:
        clips, caps = demo_data(args.clips, 0, h, t, **args.data)
        from dit_video.data.synthetic import demo_captions

        captions = demo_captions(args.data)
        data[key] = (to_model(clips), caps, captions, data_shifts(clips, caps, captions))
    x, caps, captions, data_shift = data[key]
    shape = (cfg.model.in_channels, t, h, w)
    curve: list[tuple[int, float]] = []

    def on_every(step, m, d, c):
        curve.append((step, probe(m, d, c, captions, data_shift, args.probe_noises, shape)["probe"]))
        print(f"  step {step}: probe {curve[-1][1]:.2f}", flush=True)

    model, diffusion, conditioner, log = train_run(cfg, x, caps, args.steps, seed, args.probe_every, on_every)
    log["probe_curve"] = curve
    t1 = time.perf_counter()
    pr = probe(model, diffusion, conditioner, captions, data_shift, args.probe_noises, shape)
    ck = check(model, diffusion, conditioner, cfg, captions, list(args.samples), shape, min_shift=0.25 * h)
    if args.two_objects:
        from dit_video.data.synthetic import two_object_captions

        two = check(model, diffusion, conditioner, cfg, two_object_captions(args.two_objects, 0, args.data),
                    list(args.samples), shape, min_shift=0.25 * h)
        ck |= {f"two_{k}": v for k, v in two.items() if k != "shape_sep"}
    words = {w for c in caps for w in c.split()}
    if {"square", "circle"} <= words and cfg.diffusion.objective == "flow":
        held, held_caps = demo_data(48, 1, h, t, **{**args.data, "max_objects": 1})  # data seed 1: not trained on
        ck |= shape_word_probe(model, diffusion, conditioner, to_model(held), held_caps)
    return {"variant": name, "seed": seed, "steps": args.steps, "tag": args.tag, "overrides": [*overrides,
            *args.overrides], "data": args.data, **log, "score_s": time.perf_counter() - t1, **pr, **ck}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per (variant, tag, steps), mean (min..max) over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r.get("tag", ""), r["steps"]), []).append(r)
    out = ["| variant | tag | steps | seeds | probe (x0 shift at u=1 / data's) | worst caption | "
           "check ok per seed (of n) | one shape | right shape | moves | plain bg | shape sep | shape word | "
           "two objects ok per seed | loss | train s |", "|" + "---|" * 16]
    for (name, tag, steps), rs in groups.items():
        pr = np.array([r["probe"] for r in rs])
        n = rs[0]["n"]
        oks = "/".join(str(r["ok"]) for r in rs)
        twos = "/".join(str(r["two_ok"]) for r in rs if "two_ok" in r)
        twos = f"{twos} (of {rs[0]['two_n']})" if twos else "-"

        def mean_of(k: str, rs=rs, fmt: str = ".1f") -> str:
            vals = [r[k] for r in rs if k in r]
            return f"{np.mean(vals):{fmt}}" if vals else "-"

        out.append(f"| {name} | {tag} | {steps} | {len(rs)} | {pr.mean():.2f} ({pr.min():.2f}..{pr.max():.2f}) | "
                   f"{np.mean([r['probe_min'] for r in rs]):.2f} | {oks} (of {n}) | {mean_of('one_shape')} | "
                   f"{mean_of('shape_ok')} | {mean_of('moves')} | {mean_of('background_ok')} | "
                   f"{mean_of('shape_sep', fmt='.2f')} | {mean_of('shape_word', fmt='.3f')} | {twos} | "
                   f"{np.mean([r['loss_last10pct'] for r in rs]):.4f} | {np.mean([r['train_s'] for r in rs]):.0f} |")
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v != "recipe" and v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)} or 'recipe'")
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "quality.jsonl"
    data: dict = {}
    for name in names:
        for seed in args.seeds:
            row = run_one(name, [] if name == "recipe" else VARIANTS[name], seed, args, data)
            row |= {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} seed {seed}: probe {row['probe']:.2f} (worst {row['probe_min']:.2f}), check ok "
                  f"{row['ok']}/{row['n']} (one shape {row['one_shape']}, shape {row['shape_ok']}, moves "
                  f"{row['moves']}, bg {row['background_ok']}, shape sep {row.get('shape_sep', float('nan')):.2f}, "
                  f"shape word {row.get('shape_word', float('nan')):+.3f}), loss {row['loss_last10pct']:.4f}, "
                  f"train {row['train_s']:.0f}s, score {row['score_s']:.0f}s"
                  + (f"; two objects ok {row['two_ok']}/{row['two_n']} (one shape each {row['two_one_shape']}, "
                     f"shapes {row['two_shape_ok']}, moves {row['two_moves']})" if "two_ok" in row else ""),
                  flush=True)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    (args.out / "quality.md").write_text(table(rows))
    print(f"table: {args.out / 'quality.md'}")
    return 0
