"""The training loop on the DeepSpeed engine.

One optimizer step = ``train.grad_accum`` micro-batches of ``data.batch_size`` clips per rank:
video -> VAE latents -> diffusion loss (condition dropout for CFG, via the :class:`Conditioner`) ->
``engine.backward`` -> ``engine.step`` (DeepSpeed clips gradients, steps AdamW and the warmup+cosine
schedule at the accumulation boundary) -> EMA update (fp32) -> logging -> periodic samples and
checkpoints.

A step whose loss or gradients are not finite on any rank is never applied (see
:mod:`dit_video.train.nonfinite`): parameters, optimizer, schedule and EMA stay as they were, the
step counter does not advance, the skip is counted; ``train.nonfinite=stop`` ends the run after
``train.max_skips_in_row`` such steps in a row, naming the clips.

Everything a step consumes is restored on resume: weights, optimizer and scheduler (DeepSpeed),
EMA, the step counter, the data loader's stream position and every RNG. With
``train.deterministic`` a resumed run reproduces an uninterrupted run's losses bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config import TrainConfig, config_to_yaml, resolve_deepspeed_json
from .distributed import all_reduce_sum, barrier, device, init_distributed, set_threads
from .metrics import MetricsLogger, read_metrics
from .nonfinite import NonFiniteGuard, SkippingAdamW

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did."""

    out_dir: Path
    start_step: int
    step: int
    losses: dict[int, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    samples: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    skipped: int = 0


def deepspeed_config(cfg: TrainConfig, recipe_dir: Path | None = None) -> dict[str, Any]:
    """The DeepSpeed JSON named by ``train.deepspeed`` with the recipe's batch, accumulation, clipping,
    ZeRO stage and precision written in (the recipe is the single source of truth)."""
    path = resolve_deepspeed_json(cfg.train.deepspeed, recipe_dir)
    try:
        ds = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"DeepSpeed config {path} is not readable JSON ({type(e).__name__}: {e})") from e
    if not isinstance(ds, dict):
        raise ValueError(f"DeepSpeed config {path} must hold a JSON object")
    ds["train_micro_batch_size_per_gpu"] = cfg.data.batch_size
    ds["gradient_accumulation_steps"] = cfg.train.grad_accum
    ds["gradient_clipping"] = cfg.optim.grad_clip
    ds.pop("train_batch_size", None)
    ds["zero_allow_untested_optimizer"] = True  # torch AdamW
    ds.setdefault("zero_optimization", {})
    if cfg.train.zero_stage is not None:
        ds["zero_optimization"]["stage"] = cfg.train.zero_stage
    if ds.get("fp16", {}).get("enabled"):
        raise ValueError(f"{path}: fp16 is not supported (use bf16 or fp32)")
    # "auto" is decided by the Trainer, on the device (precision.py)
    set_bf16(ds, cfg.train.precision == "bf16" if cfg.train.precision in ("fp32", "bf16")
             else bool(ds.get("bf16", {}).get("enabled")))
    ds.setdefault("steps_per_print", 10**9)
    return ds


def set_bf16(ds: dict[str, Any], enabled: bool) -> None:
    """Turn the DeepSpeed config's bf16 on or off; under bf16 non-finite steps are skipped, never applied
    (``check_grad_overflow``, nonfinite.py)."""
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": enabled}
    if enabled:
        ds["bf16"]["check_grad_overflow"] = True


class Trainer:
    """Build everything from a :class:`TrainConfig`, then :meth:`fit`.

    ``loader``: any iterable of batches with ``state_dict``/``load_state_dict`` (default:
    ``dit_video.data.make_loader(cfg.data, dp_rank, dp_size)``). ``resume``: ``None`` (fresh run;
    an existing checkpoint directory is an error), ``"auto"`` (newest complete checkpoint of
    ``train.out_dir`` if any) or a checkpoint path.
    """

    def __init__(self, cfg: TrainConfig, *, recipe_dir: Path | None = None, loader: Any = None,
                 resume: str | None = None):
        self.cfg = cfg
        self.out_dir = Path(cfg.train.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.ds_config = deepspeed_config(cfg, recipe_dir)  # errors in the JSON before any heavy work
        self.resume_from = self._resume_target(resume)
        if loader is None:
            self._check_shards()

        self.rank, self.world_size = init_distributed(cfg.train.comm_timeout_minutes)
        from ..parallel import build_layout

        self.layout = build_layout(self.world_size, self.rank, cfg.parallel.sequence_parallel)
        if self.layout.sp is not None:  # indivisible frames / positions / heads: an error before any step
            m = cfg.model
            self.layout.sp.check(m.token_grid, m.num_heads, m.attention)
        self.device = device()
        self.threads = set_threads(cfg.train.threads)
        if cfg.train.precision == "auto":
            self._choose_precision()
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.train.seed)

        from ..diffusion import build_diffusion
        from ..models import VideoDiT
        from ..pipeline.conditioner import ConditionedDiT, Conditioner
        from ..pipeline.vae import build_vae
        from .ema import EMA

        self._pin_vocabulary()
        self.diffusion = build_diffusion(cfg.diffusion)
        self.vae = build_vae(cfg.vae, self.device)
        self.conditioner = Conditioner(cfg.model, cfg.condition, device=self.device)
        module = ConditionedDiT(VideoDiT(cfg.model), self.conditioner.new_learned_encoder()).to(self.device)
        self.ema = EMA(module, cfg.train.ema_decay, cfg.train.ema_warmup)  # a plain copy: samples on one rank
        module.dit.set_sequence_parallel(self.layout.sp)
        self.num_params = sum(p.numel() for p in module.parameters())

        import deepspeed

        from .schedule import WarmupCosine

        self.universal = self._universal_source()  # a checkpoint of another world size: DeepSpeed's universal format
        if self.universal is not None:
            self.ds_config.setdefault("checkpoint", {})["load_universal"] = True

        o = cfg.optim
        optimizer = SkippingAdamW(module.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                      weight_decay=o.weight_decay)
        scheduler = WarmupCosine(optimizer, warmup=o.warmup_steps, total=cfg.train.steps, min_ratio=o.min_lr_ratio)
        self.engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=self.ds_config)
        ckpt.install_safe_loading(self.engine)
        self.dtype = torch.bfloat16 if self.engine.bfloat16_enabled() else torch.float32
        self.guard = NonFiniteGuard(self.engine, cfg.train.nonfinite, cfg.train.max_skips_in_row,
                                    cfg.train.spike_factor)

        self.loader = loader
        if self.loader is None:
            from ..data import make_loader

            # readers are the data-parallel ranks: the ranks of a sequence-parallel group read the same clips
            self.loader = make_loader(cfg.data, self.layout.dp_rank, self.layout.dp_size)
        # the same seed on every rank: draws are made for the global batch and sliced (Diffusion.training_loss)
        seed = cfg.train.seed * 1_000_003
        self.generators = {"noise": torch.Generator(device=self.device).manual_seed(seed),
                           "dropout": torch.Generator(device="cpu").manual_seed(seed + 7919)}
        self.step = 0
        self.time_progress = 0.0  # fraction of train.max_minutes used (0 without a budget)
        self.metrics = MetricsLogger(self.out_dir, enabled=self.rank == 0)
        self.config_yaml = config_to_yaml(cfg)

    # ------------------------------------------------------------------ setup helpers
    def _choose_precision(self) -> None:
        """``train.precision: auto``: bf16 if this device's bf16 GEMM is measured faster (see precision.py). The
        choice is written into the recipe (saved with every checkpoint); a resumed run keeps its checkpoint's."""
        from .precision import agree, choose_precision

        m = self.cfg.model
        saved = None
        if self.resume_from is not None and (self.resume_from / ckpt.CONFIG_FILE).is_file():
            from ..pipeline.safe_yaml import load_yaml_mapping

            saved = (load_yaml_mapping(self.resume_from / ckpt.CONFIG_FILE).get("train") or {}).get("precision")
        if saved in ("fp32", "bf16"):
            choice, reason = saved, f"the precision of the checkpoint resumed ({self.resume_from.name})"
        else:
            tokens = self.cfg.data.batch_size * math.prod(m.token_grid)
            choice, reason = choose_precision(self.device, tokens, m.hidden_size, int(m.hidden_size * m.mlp_ratio))
            choice = agree(choice, self.world_size)
        if self.rank == 0:
            log.info("train.precision=auto -> %s: %s", choice, reason)
        self.cfg.train.precision = choice
        self.precision_reason = reason
        set_bf16(self.ds_config, choice == "bf16")

    def _resume_target(self, resume: str | None) -> Path | None:
        if resume is None:
            if ckpt.complete_checkpoints(self.ckpt_dir):
                raise FileExistsError(f"{self.ckpt_dir} already holds checkpoints: pass --resume auto to continue "
                                      "that run, or choose another train.out_dir")
            return None
        if resume == "auto":
            return ckpt.newest_valid(self.ckpt_dir)
        return ckpt.find_checkpoint(resume)

    def _pin_vocabulary(self) -> None:
        """A learned tiny text encoder's words are part of the model: write them into the recipe (saved with every
        checkpoint), taking a resumed checkpoint's own list, so no later change of the defaults changes the model."""
        c = self.cfg.condition
        if c.text_encoder != "tiny" or c.tiny_vocab:
            return
        from ..pipeline.conditioner import synthetic_vocab

        if self.resume_from is not None and (self.resume_from / ckpt.CONFIG_FILE).is_file():
            from ..pipeline.config import recipe_from_yaml

            saved = recipe_from_yaml((self.resume_from / ckpt.CONFIG_FILE).read_text(), str(self.resume_from))
            c.tiny_vocab = list(saved.condition.tiny_vocab)
        c.tiny_vocab = c.tiny_vocab or synthetic_vocab()

    def _universal_source(self) -> Path | None:
        """Resuming a checkpoint written by another number of ranks: convert it once (rank 0), all ranks agree."""
        if self.resume_from is None or ckpt.saved_world_size(self.resume_from) == self.world_size:
            return None
        error = None
        if self.rank == 0:
            try:
                ckpt.prepare_universal(self.resume_from)
            except Exception as e:  # noqa: BLE001 - every rank raises it below
                error = e
        if all_reduce_sum(torch.tensor([0.0 if error is None else 1.0])).item() > 0:
            raise error if error is not None else ckpt.CheckpointError("rank 0 could not convert the checkpoint")
        return self.resume_from.parent / ckpt.UNIVERSAL_DIR / self.resume_from.name

    def _check_shards(self) -> None:
        from ..data.shardlist import list_shards

        if not self.cfg.data.shards:
            raise ValueError("data.shards is empty: give a directory or glob of webdataset .tar shards")
        # FileNotFoundError naming the pattern when nothing matches; ValueError for a command without data.allow_pipe
        shards = list_shards(self.cfg.data.shards, allow_pipe=self.cfg.data.allow_pipe)
        if self.cfg.data.kind == "latents":  # latent shards of another VAE / text encoder: one clear error
            from ..data.latents import check_latent_shards

            v, c = self.cfg.vae, self.cfg.condition
            hf = self.cfg.model.conditioning == "text" and c.text_encoder == "hf"
            check_latent_shards(shards, vae_path=v.path if v.kind == "diffusers" else None,
                                scaling_factor=v.scaling_factor, text_path=c.text_path if hf else None,
                                max_length=c.max_length if hf else None)

    # ------------------------------------------------------------------ state
    def _rank_state(self) -> dict[str, Any]:
        from .rng import rng_state

        state = getattr(self.loader, "state_dict", None)
        return {"step": self.step, "loader": json.dumps(state()) if state else None,
                "rng": rng_state(self.generators), "nonfinite": self.guard.state_dict()}

    def save(self) -> Path:
        own = self._rank_state()  # every rank's own file; rank 0's copy also rides in DeepSpeed's client state
        client = {"world_size": self.world_size, **own}
        ema = self.ema.state_dict() if self.rank == 0 else None
        path = ckpt.save(self.engine, self.ckpt_dir, self.step, client, own, ema, self.config_yaml,
                         self.rank, self.cfg.train.keep_last)
        if self.rank == 0:
            log.info("saved checkpoint %s", path)
            self.plot_loss()
        return path

    def load(self, tag_dir: Path) -> None:
        from .rng import set_rng_state

        client, own = ckpt.load(self.engine, self.universal or tag_dir, self.rank)
        self.ema.load_state_dict(ckpt.load_ema(tag_dir))
        self.step = int(own["step"])
        if int(client.get("step", self.step)) != self.step:
            raise ValueError(f"{tag_dir}: client state step {client.get('step')} != rank state step {self.step}")
        if own["loader"] is not None and hasattr(self.loader, "load_state_dict"):
            saved = json.loads(own["loader"])
            if self.universal is None:
                self.loader.load_state_dict(saved)
            else:  # each rank's stream position is per rank: restart cleanly at the next epoch
                self._restart_stream(saved.get("epoch", 0) + 1, int(client.get("world_size", 0)))
        set_rng_state(own["rng"], self.generators)
        self.guard.load_state_dict(own.get("nonfinite"))
        log.info("resumed from %s at step %d", tag_dir, self.step)

    def _restart_stream(self, epoch: int, saved_world: int) -> None:
        sd = self.loader.state_dict()
        for w in sd["workers"]:
            w.update(epoch=epoch, pos=0, done=False)
            if "pending" in w:
                w["pending"] = []  # samples held for an unfinished bucket batch belong to the old stream
        self.loader.load_state_dict(sd)
        if self.rank == 0:
            log.warning("the checkpoint was written by %d rank(s), this run has %d: the data stream cannot continue "
                        "mid-epoch (positions are per rank), so it restarts at epoch %d; the rest of the interrupted "
                        "epoch is skipped, no clip of it is repeated", saved_world, self.world_size, epoch)

    # ------------------------------------------------------------------ one step
    def _micro_step(self, batch: dict[str, Any], last: bool) -> tuple[torch.Tensor, dict[str, float], int]:
        from ..data import to_float

        c = self.conditioner
        pre: dict[str, Any] = {}
        if "latents" in batch:  # data.kind=latents: no decoder, VAE or text encoder in the step
            x0 = batch["latents"].to(self.device).float()
            if not c.learned:
                pre = {"text": batch.get("text"), "text_mask": batch.get("text_mask")}
        else:
            video = to_float(batch["video"].to(self.device)).float()
            with torch.no_grad():
                x0 = self.vae.encode(video).float()
        b = x0.shape[0]
        rows = (b * self.layout.dp_size, b * self.layout.dp_rank)  # this rank's rows of the global batch
        dc = self.cfg.diffusion
        # which clips get given frames is drawn first, so their caption can drop at its own rate
        cond = self.diffusion.draw_cond_mask(rows[0], x0.shape[2], self.generators["dropout"], self.device)
        drop = c.dropout(b, dc.cfg_dropout, self.generators["dropout"], batch_slice=rows,
                         given=None if cond is None else cond.any(1), p_given=dc.cond_cfg_dropout)
        kw = c.training_kwargs(list(batch["caption"]), drop, **pre)
        engine, dtype = self.engine, self.dtype

        def model_fn(x_t, t, cond_mask=None):
            return engine(x_t.to(dtype), t, cond_mask=cond_mask, **kw).float()

        loss, logs = self.diffusion.training_loss(model_fn, x0, generator=self.generators["noise"], batch_slice=rows,
                                                  cond_mask=cond)
        # sequence parallel: each of the N ranks holds a share of the clip's gradient and DeepSpeed averages over
        # all dp*N ranks; scaling by N makes that the mean over data-parallel groups of each clip's full gradient
        scaled = self.guard.checked(loss)
        engine.backward(scaled * self.layout.sp_size if self.layout.sp_size > 1 else scaled)
        if last:
            lr_kwargs = {"progress": self.time_progress} if self.cfg.train.max_minutes else None
            engine.step(lr_kwargs=lr_kwargs)
        else:
            engine.step()  # not an accumulation boundary: DeepSpeed only counts the micro-step
        pt, ph, pw = self.cfg.model.patch_size
        b, _, t, h, w = x0.shape
        return loss.detach(), logs, b * (t // pt) * (h // ph) * (w // pw)

    def train_step(self, it) -> dict[str, float]:
        """One optimizer step (``grad_accum`` micro-batches from iterator ``it``); returns the step's scalars,
        means over the data-parallel ranks. ``scalars["applied"]`` is 0.0 for a skipped (non-finite) step."""
        t0 = time.perf_counter()
        n = self.cfg.train.grad_accum
        losses, tokens, clips, keys = [], 0, 0, []
        extra: dict[str, float] = {}
        wait = 0.0  # seconds this step waited for the loader (it should be ~0: decoding runs ahead in workers)
        for i in range(n):
            tw = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                raise RuntimeError("the data loader ran out of batches (data.epochs too small for train.steps)") \
                    from None
            wait += time.perf_counter() - tw
            loss, logs, n_tokens = self._micro_step(batch, last=i == n - 1)
            losses.append(loss)
            tokens += n_tokens
            clips += len(batch["caption"])
            keys += list(batch.get("key", []))
            for k in ("mse", "t_mean", "cond_frac"):
                if k in logs:
                    extra[k] = extra.get(k, 0.0) + logs[k] / n
        dt = max(time.perf_counter() - t0, 1e-9)
        local_loss = torch.stack(losses).float().mean()
        # one all-reduce: loss sum, non-finite count, tokens, clips, seconds (means over ranks)
        agg = all_reduce_sum(torch.stack([torch.nan_to_num(local_loss, nan=0.0, posinf=0.0, neginf=0.0),
                                          (~torch.isfinite(local_loss)).float(), torch.tensor(float(tokens)),
                                          torch.tensor(float(clips)), torch.tensor(dt)]).double().cpu())
        finite_loss = agg[1].item() == 0
        applied = self.guard.after_step(self.step, finite_loss, keys)
        if applied:
            self.step += 1
            self.ema.update(self.engine.module, self.step)
        mean_dt = agg[4].item() / self.world_size
        gn = self.engine.get_global_grad_norm() if applied else None
        mean_loss = agg[0].item() / self.world_size if finite_loss else float("nan")
        self.guard.observe_loss(self.step, mean_loss)
        scalars = {
            "loss": mean_loss,
            "grad_norm": float(gn) if gn is not None else float("nan"),
            "lr": float(self.engine.get_lr()[0]),
            "tokens_per_s": agg[2].item() / self.layout.sp_size / mean_dt,  # a shared clip counts once
            "clips_per_s": agg[3].item() / self.layout.sp_size / mean_dt,
            "data_wait_s": wait,
            "data_wait_frac": wait / dt,
            "applied": float(applied),
            "skipped_total": float(self.guard.skipped),
            **{f"diffusion/{k}": v for k, v in extra.items()},
        }
        return scalars

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        cfg = self.cfg.train
        if self.resume_from is not None:
            self.load(self.resume_from)
            barrier()
            if self.rank == 0:
                ckpt.set_aside_newer(self.ckpt_dir, self.step)
                if self.universal is not None:
                    shutil.rmtree(self.universal, ignore_errors=True)  # derived from the tag: not kept
        start = self.step
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(self.config_yaml)
            log.info("training %s parameters on %d rank(s) (%d CPU threads), %s, ZeRO-%d, steps %d -> %d",
                     f"{self.num_params:,}", self.world_size, self.threads,
                     "bf16" if self.dtype == torch.bfloat16 else "fp32",
                     self.ds_config["zero_optimization"].get("stage", 0), start, cfg.steps)
        result = TrainResult(out_dir=self.out_dir, start_step=start, step=start)
        t_start = time.monotonic()
        bar = None
        if self.rank == 0 and cfg.progress:
            from tqdm.auto import tqdm

            if cfg.max_minutes is not None:  # the time budget ends the run: the bar shows its seconds, the step beside
                bar = tqdm(total=round(60 * cfg.max_minutes), desc="train (time budget)", unit="s", dynamic_ncols=True)
            else:
                bar = tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True)
        it = iter(self.loader)
        last_saved = start if self.resume_from is not None else -1
        self.engine.train()
        try:
            while self.step < cfg.steps:
                scalars = self.train_step(it)
                out_of_time = self._out_of_time(t_start)
                if not scalars["applied"]:
                    self.metrics.log(self.step, scalars, event="skipped_nonfinite")
                    if out_of_time:
                        break
                    continue
                result.losses[self.step] = scalars["loss"]
                if self.step % cfg.log_every == 0 or self.step == cfg.steps or out_of_time:
                    stats = self.loader.stats() if hasattr(self.loader, "stats") else {}
                    self.metrics.log(self.step, {**scalars, **{f"loader/{k}": float(v) for k, v in stats.items()}})
                if self.step == start + 1 and self.rank == 0:
                    self._record_kernel_choices()
                if bar is not None:
                    if cfg.max_minutes is not None:
                        bar.update(min(bar.total, round(time.monotonic() - t_start)) - bar.n)
                        bar.set_postfix(step=self.step, loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}")
                    else:
                        bar.update(1)
                        bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}")
                ckpt.fault_point("after_step", self.step)
                if self.cfg.sample.every and self.step % self.cfg.sample.every == 0 and self.cfg.sample.prompts:
                    result.samples += self.write_samples(f"step_{self.step:08d}")
                    barrier()  # rank 0 sampled from its EMA copy (no collectives); the others waited here
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or out_of_time:
                    result.checkpoint = self.save()
                    last_saved = self.step
                if out_of_time:
                    if self.rank == 0:
                        log.info("train.max_minutes=%s reached at step %d: stopping", cfg.max_minutes, self.step)
                    break
            if last_saved != self.step:
                result.checkpoint = self.save()
        finally:
            if bar is not None:
                bar.close()
            self.metrics.flush()
        if self.rank == 0:
            self.plot_loss()
        result.step = self.step
        result.skipped = self.guard.skipped
        result.seconds = time.monotonic() - t_start
        barrier()
        return result

    def _record_kernel_choices(self) -> None:
        """What ``auto`` measured and chose for each op layout of the first step (kernels/autotune.py), in the run
        directory and the log: the kernels a run used are part of what it measured."""
        from ..kernels import auto_decisions

        chosen = auto_decisions()
        (self.out_dir / "kernel_choices.json").write_text(json.dumps(chosen, indent=1))
        for d in chosen:
            log.info("kernel auto: %s -> %s (%s)", d["op"], d["chosen"], d["why"])

    def _out_of_time(self, t_start: float) -> bool:
        """With ``train.max_minutes``: whether time is up (all ranks agree); also sets the time progress."""
        if self.cfg.train.max_minutes is None:
            return False
        frac = (time.monotonic() - t_start) / (60.0 * self.cfg.train.max_minutes)
        flag = torch.tensor([float(frac >= 1.0), frac])
        if self.world_size > 1:  # every rank must agree, or the next collective hangs
            import torch.distributed as dist

            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.time_progress = min(1.0, float(flag[1]))
        return bool(flag[0] > 0)

    # ------------------------------------------------------------------ outputs
    def plot_loss(self) -> Path:
        from ..pipeline.plots import plot_loss

        rows = [r for r in read_metrics(self.out_dir / "metrics.jsonl") if isinstance(r.get("loss"), (int, float))]
        return plot_loss([r["step"] for r in rows], [r["loss"] for r in rows], self.out_dir / "loss.png")

    def sampling_pipeline(self):
        from ..pipeline.sampling import SamplingPipeline

        return SamplingPipeline(self.ema.shadow, self.cfg.pipeline_config(), vae=self.vae,
                                conditioner=self.conditioner, device=self.device)

    def write_samples(self, name: str) -> list[Path]:
        """EMA samples of ``sample.prompts`` on rank 0 (the EMA copy is not partitioned: no collectives)."""
        if self.rank != 0:
            return []
        from ..pipeline.plots import filmstrip
        from ..pipeline.video import to_uint8_frames, upscale, write_video

        s = self.cfg.sample
        prompts, labels = self.conditioner.prompts_or_labels(list(s.prompts))
        videos = self.sampling_pipeline().generate(prompts, labels, steps=s.steps, sampler=s.sampler,
                                                   guidance_scale=s.guidance_scale, seed=s.seed,
                                                   guidance_interval=tuple(s.guidance_interval))
        out = self.out_dir / "samples"
        paths: list[Path] = []
        scale = max(1, 128 // max(videos.shape[-2:]))
        for i, v in enumerate(videos):
            paths += write_video(v, out / f"{name}_{i}.mp4", fps=s.fps, scale=scale)
        names = list(s.prompts)
        frames = [to_uint8_frames(v) for v in videos]
        paths.append(filmstrip([upscale(f, 1) for f in frames], names, out / f"{name}.png"))
        if s.eval:  # temporal consistency, motion and (synthetic captions) persistence of these samples
            from ..eval import evaluate_clips, scalars, to_json

            res = evaluate_clips(frames, prompts if prompts else None, fps=s.fps)
            (out / f"{name}_eval.json").write_text(to_json(res))
            paths.append(out / f"{name}_eval.json")
            self.metrics.log(self.step, scalars(res), event="sample_eval")
            log.info("sample eval at step %d: %s", self.step,
                     ", ".join(f"{k.split('/')[1]} {v:.4g}" for k, v in scalars(res).items()))
        return paths


def train(cfg: TrainConfig, *, recipe_dir: Path | None = None, resume: str | None = None,
          loader: Any = None) -> TrainResult:
    """Build a :class:`Trainer` and run it."""
    return Trainer(cfg, recipe_dir=recipe_dir, loader=loader, resume=resume).fit()
