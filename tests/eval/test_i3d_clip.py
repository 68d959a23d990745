"""FVD through a tiny random TorchScript I3D of the StyleGAN-V signature; CLIP score through a tiny random CLIPModel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_clips import colour_change, smooth, square_clip, static

from dit_video.eval import evaluate_clips
from dit_video.eval.frechet import frechet_from_features
from dit_video.eval.i3d import i3d_features, load_i3d, preprocess


class TinyI3D(torch.nn.Module):
    """The i3d_torchscript.pt call signature; refuses input that is not [B, 3, T, 224, 224] in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(6, 8)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[3] != 224 or x.shape[4] != 224:
            raise ValueError("expected [B, 3, T, 224, 224]")
        if rescale or resize or not return_features:
            raise ValueError("expected rescale=False, resize=False, return_features=True")
        if bool(x.min() < -1.0) or bool(x.max() > 1.0):
            raise ValueError("expected values in [-1, 1]")
        stats = torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)  # [B, 6]
        return self.proj(stats)


@pytest.fixture(scope="module")
def i3d_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.script(TinyI3D()).save(str(path))
    return path


def test_preprocess_follows_the_styleganv_convention():
    clip = np.full((4, 48, 64, 3), (255, 0, 51), np.uint8)  # landscape: shorter side 48 -> 224, width cropped
    x = preprocess(clip)
    assert x.shape == (3, 4, 224, 224) and x.dtype == torch.float32
    expect = torch.tensor([1.0, -1.0, 2 * 51 / 255 - 1]).view(3, 1, 1, 1)
    assert torch.allclose(x, expect.expand_as(x), atol=1e-6)


def test_fvd_through_a_torchscript_i3d(i3d_path):
    model = load_i3d(i3d_path)
    reds = [smooth(), static(), smooth(speed=1)]
    blues = [square_clip([(32, 12 + 2 * t) for t in range(16)], ["blue"] * 16), colour_change(), static()[..., ::-1]]
    fake_f = i3d_features(model, reds, batch_size=2)
    real_f = i3d_features(model, blues)
    direct = model(torch.stack([preprocess(c) for c in reds]), rescale=False, resize=False, return_features=True)
    assert fake_f.shape == (3, 8) and np.allclose(fake_f, direct.detach().double().numpy(), atol=1e-6)
    out = evaluate_clips(reds, i3d=model, real=blues)["aggregate"]
    # float32 features, batched differently (2 vs 8): equal to float32 rounding
    assert out["fvd"] == pytest.approx(frechet_from_features(fake_f, real_f), rel=1e-5) and out["fvd"] > 0
    same = evaluate_clips(reds, i3d=model, real=[c.copy() for c in reds])["aggregate"]
    assert same["fvd"] == pytest.approx(0.0, abs=1e-6) and out["kvd"] > same["kvd"]


def test_i3d_errors_name_the_flag(tmp_path, i3d_path):
    with pytest.raises(FileNotFoundError, match="--i3d"):
        load_i3d(tmp_path / "missing.pt")
    (tmp_path / "not.pt").write_bytes(b"not a torchscript file")
    with pytest.raises(ValueError, match="--i3d"):
        load_i3d(tmp_path / "not.pt")

    class Flat(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            return x.mean()

    torch.jit.script(Flat()).save(str(tmp_path / "flat.pt"))
    with pytest.raises(ValueError, match=r"\[batch, features\]"):
        i3d_features(load_i3d(tmp_path / "flat.pt"), [static()])

    class Needs16(torch.nn.Module):  # like a real I3D, whose temporal kernels need enough frames
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            return torch.nn.functional.avg_pool3d(x, kernel_size=(16, 224, 224)).flatten(1)

    torch.jit.script(Needs16()).save(str(tmp_path / "needs16.pt"))
    assert i3d_features(load_i3d(tmp_path / "needs16.pt"), [static()]).shape == (1, 3)
    with pytest.raises(ValueError, match=r"--i3d: the model failed on a batch of shape \(1, 3, 8, 224, 224\)"):
        i3d_features(load_i3d(tmp_path / "needs16.pt"), [static()[:8]])
    with pytest.raises(ValueError, match="both"):
        evaluate_clips([static()], i3d=load_i3d(i3d_path))


def make_tiny_clip(path) -> None:
    """A random CLIPModel (2 x 16-wide layers) with a character-level tokenizer and a 32-px image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(str(path))
    image = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image, tokenizer=tok).save_pretrained(str(path))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    make_tiny_clip(path)
    return path


def test_clip_score_is_the_per_frame_cosine(clip_dir):
    from dit_video.eval.clip_score import ClipScorer

    scorer = ClipScorer(clip_dir)
    clip = colour_change()
    caption = "a red square moving right"
    per_frame = scorer.frame_scores(clip, caption)
    # the same cosine read back from the model's own logits: logits_per_image = exp(logit_scale) * cosine
    inputs = scorer.processor(text=[caption], images=list(clip), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = scorer.model(**inputs)
    cosine = (out.logits_per_image[:, 0] / scorer.model.logit_scale.exp()).detach().double().numpy()
    assert per_frame.shape == (16,) and np.allclose(per_frame, cosine, atol=1e-5)
    assert np.all(np.abs(per_frame) <= 1 + 1e-6)
    assert scorer.score(clip, caption) == pytest.approx(per_frame.mean())
    assert np.ptp(scorer.frame_scores(static(), caption)) < 1e-6  # identical frames, identical scores
    assert np.ptp(per_frame) > 1e-6  # red frames and blue frames differ
    row = evaluate_clips([clip], [caption], clip=scorer)
    assert row["videos"][0]["clip_score"] == pytest.approx(per_frame.mean())
    assert row["aggregate"]["clip_score"] == pytest.approx(per_frame.mean())


def test_clip_missing_folder_names_the_flag(tmp_path):
    from dit_video.eval.clip_score import ClipScorer

    with pytest.raises(FileNotFoundError, match="--clip"):
        ClipScorer(tmp_path)
