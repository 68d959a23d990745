"""``train.precision: auto``: bf16 only where its GEMM is measured faster; recorded, kept on resume, one choice for
all ranks."""

from __future__ import annotations

import itertools

import pytest
import torch
from train_helpers import DEMO, tiny_overrides

from dit_video.train import precision
from dit_video.train.config import load_train_config


def test_gemm_times_are_real_measurements():
    t = precision.gemm_times(torch.device("cpu"), 256, 32, 128, reps=3)
    assert set(t) == {"fp32", "bf16"} and all(0 < v < 10 for v in t.values())


@pytest.mark.parametrize("fp32_s,bf16_s,want", [(1.0, 0.5, "bf16"), (1.0, 0.9, "fp32"), (0.05, 1.0, "fp32")])
def test_choice_follows_the_measured_speedup(monkeypatch, fp32_s, bf16_s, want):
    monkeypatch.setattr(precision, "gemm_times", lambda *a, **k: {"fp32": fp32_s, "bf16": bf16_s})
    choice, reason = precision.choose_precision(torch.device("cpu"), 2304, 96, 384)
    assert choice == want
    assert f"{fp32_s / bf16_s:.2f}x" in reason and "fp32" in reason


def _trainer(tmp_path, shards, monkeypatch, speed: dict, *extra):
    from dit_video.data import make_loader
    from dit_video.train.trainer import Trainer

    monkeypatch.setattr(precision, "gemm_times", lambda *a, **k: dict(speed))
    cfg = load_train_config(DEMO, tiny_overrides(shards, tmp_path / "run", "train.precision=auto", "train.steps=2",
                                                 "train.ckpt_every=2", *extra))
    batch = next(iter(make_loader(cfg.data)))
    return cfg, lambda resume=None: Trainer(cfg, loader=itertools.repeat(batch), resume=resume)


def test_auto_picks_bf16_when_faster_and_a_resume_keeps_it(tmp_path, shards, monkeypatch):
    cfg, make = _trainer(tmp_path, shards, monkeypatch, {"fp32": 1.0, "bf16": 0.4})
    t = make()
    assert t.engine.bfloat16_enabled() and t.cfg.train.precision == "bf16" and "2.50x" in t.precision_reason
    t.fit()
    # the same machine now measures bf16 slower: the resumed run keeps the checkpoint's bf16
    monkeypatch.setattr(precision, "gemm_times", lambda *a, **k: {"fp32": 0.1, "bf16": 1.0})
    cfg.train.precision = "auto"
    cfg.train.steps = 3
    r = make("auto")
    assert r.engine.bfloat16_enabled() and "checkpoint" in r.precision_reason


def test_auto_picks_fp32_when_bf16_is_emulated(tmp_path, shards, monkeypatch):
    _, make = _trainer(tmp_path, shards, monkeypatch, {"fp32": 0.003, "bf16": 0.06})  # AVX2-only, measured
    t = make()
    assert not t.engine.bfloat16_enabled() and t.cfg.train.precision == "fp32"
