"""Latent shards (``data.kind: latents``): what ``dit-video encode-shards`` writes and the loader reads.

A latent shard is a webdataset tar, one sample per source clip:

* ``{key}.safetensors``: ``mean`` and ``std`` ``[c, t, h, w]``, the VAE posterior's mean and standard
  deviation already normalised the way :meth:`dit_video.encoders.VAE.encode` normalises latents
  (``(z - shift) * scale``, or per channel), so ``mean`` is exactly what online encoding gives the
  model (the posterior's mode); and, when a text encoder was given, ``text`` ``[n, D]``: the token
  states of the caption's ``n`` unmasked tokens. All in bf16 (or fp16 / fp32: the manifest says).
  safetensors only: nothing is unpickled.
* ``{key}.txt``: the caption; ``{key}.json``: the source key, shard and metadata, the clip's pixel
  shape (``frames``, ``height``, ``width``), its bucket, and where it was cut (``start_frame``).

``manifest.json`` beside the shards records the VAE (its directory, class, a fingerprint of its
config and weights, scaling), the text encoder (likewise, plus ``max_length``) and the
preprocessing (frames, stride/fps, size or buckets, centre crop, centred window). The trainer must
refuse shards made by another VAE than the recipe's: :func:`check_latent_shards` raises one clear
line.

The loader yields ``{"latents": float32 [B, c, t, h, w], "text": float32 [B, L, D] (zeros past each
caption's tokens), "text_mask": bool [B, L], "caption", "key"}`` (``text``/``text_mask`` None for
shards without text states), one latent shape per batch. ``latents`` is the posterior mean, or with
``data.latent_sample`` a draw ``mean + std * noise`` seeded by the sample's stream position.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

import torch

from . import buckets as bucketing
from .pipeline import SampleStream, _rng, json_of
from .stats import Counters

MANIFEST = "manifest.json"
FORMAT, VERSION = "dit-video-latents", 1
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# -- fingerprints and the manifest -------------------------------------------------------------------

def fingerprint_file(path: str, chunk: int = 1 << 16) -> str:
    """sha256 over the file's size, its first and last 4 MiB and 64 evenly spaced 64 KiB blocks: tells
    different weight files apart without reading gigabytes (two trainings never agree on those bytes)."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= 16 << 20:
            h.update(f.read())
        else:
            offsets = [0, size - (4 << 20)] + [int(size * i / 64) for i in range(64)]
            for off in offsets:
                f.seek(off)
                h.update(f.read(4 << 20 if off in offsets[:2] else chunk))
    return h.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")


def fingerprint_dir(path: str | os.PathLike) -> dict[str, Any]:
    """``{"config": sha256 of config.json, "weights": fingerprint of the weight files}`` of a model directory
    (``save_pretrained`` layout; a ``vae`` / ``text_encoder`` subfolder of a pipeline works too)."""
    d = str(path)
    if not os.path.isdir(d):
        raise FileNotFoundError(f"model directory {d!r} does not exist")
    cfg = os.path.join(d, "config.json")
    out: dict[str, Any] = {"config": None, "weights": None}
    if os.path.isfile(cfg):
        with open(cfg, "rb") as f:
            out["config"] = hashlib.sha256(f.read()).hexdigest()
    files = sorted(n for n in os.listdir(d) if n.endswith(WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(d, n)))
    if files:
        h = hashlib.sha256()
        for n in files:
            h.update(n.encode() + b"\0" + fingerprint_file(os.path.join(d, n)).encode())
        out["weights"] = h.hexdigest()
    return out


def write_manifest(out: str, manifest: dict[str, Any]) -> str:
    """Write ``out/manifest.json`` atomically; an existing one must agree (a resumed or parallel run)."""
    path = os.path.join(out, MANIFEST)
    have = read_manifest(out)
    if have is not None:
        diff = manifest_diff(have, manifest)
        if diff:
            raise ValueError(f"{path} was written for other inputs ({diff}); encode into another --out, or delete "
                             "that directory to start over")
        return path
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return path


def read_manifest(directory: str) -> dict[str, Any] | None:
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            m = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path} is not JSON ({e}); rewrite it with dit-video encode-shards") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dit-video latent manifest (format {m.get('format')!r})")
    if m.get("version") != VERSION:
        raise ValueError(f"{path} has manifest version {m.get('version')}; this dit-video reads {VERSION}")
    return m


def manifest_diff(a: dict, b: dict, keys: Iterable[str] = ("vae", "text_encoder", "preprocessing", "dtype")) -> str:
    """The first difference between two manifests in the fields that make latents comparable, or ''."""
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            for sub in sorted(set(x) | set(y)):
                if sub == "path":  # the same model may move; its fingerprint decides
                    continue
                if x.get(sub) != y.get(sub):
                    return f"{k}.{sub}: {x.get(sub)!r} vs {y.get(sub)!r}"
        elif x != y:
            return f"{k}: {x!r} vs {y!r}"
    return ""


def shard_manifest(shards: list[str]) -> dict[str, Any]:
    """The one manifest of a shard list (every directory's must agree)."""
    dirs = sorted({os.path.dirname(os.path.abspath(s)) for s in shards if "://" not in s and not s.startswith("pipe:")})
    found = [(d, read_manifest(d)) for d in dirs]
    missing = [d for d, m in found if m is None]
    if missing:
        raise FileNotFoundError(f"no {MANIFEST} in {missing[0]!r}: data.kind=latents reads shards written by "
                                "`dit-video encode-shards` (which records the VAE and preprocessing there)")
    if not found:
        raise ValueError("data.kind=latents needs local shard directories (their manifest.json says which VAE "
                         "made them)")
    first_dir, first = found[0]
    for d, m in found[1:]:
        diff = manifest_diff(first, m)
        if diff:
            raise ValueError(f"latent shards in {first_dir!r} and {d!r} were made differently ({diff}); train on one "
                             "set at a time")
    return first


def check_latent_shards(shards: list[str] | str, *, vae_path: str | None, scaling_factor: float | None = None,
                        text_path: str | None = None, max_length: int | None = None) -> dict[str, Any]:
    """Raise ``ValueError`` unless the latent shards were made by the recipe's VAE (and text encoder).

    ``vae_path``: the recipe's ``vae.path`` (None: pixel space, which latent shards never are);
    ``scaling_factor``: the recipe's ``vae.scaling_factor`` override, if any; ``text_path`` /
    ``max_length``: the recipe's frozen text encoder, when it takes text states from the shards.
    Returns the manifest.
    """
    if isinstance(shards, str):
        from .shardlist import list_shards

        shards = list_shards(shards)
    m = shard_manifest(shards)
    where = os.path.dirname(os.path.abspath(shards[0]))
    made = m["vae"]
    if vae_path is None:
        raise ValueError(f"latent shards in {where!r} were made by the VAE {made.get('path')!r}, but the recipe "
                         "trains in pixel space (vae.kind=identity): set vae.kind=diffusers and vae.path to that VAE")
    mine = fingerprint_dir(vae_path)
    if (mine["config"], mine["weights"]) != (made.get("config"), made.get("weights")):
        raise ValueError(f"latent shards in {where!r} were made by the VAE {made.get('path')!r} (weights "
                         f"{str(made.get('weights'))[:12]}), the recipe's vae.path is {vae_path!r} (weights "
                         f"{str(mine['weights'])[:12]}): re-encode with `dit-video encode-shards ... --vae {vae_path}` "
                         "or point vae.path at the VAE that made them")
    if scaling_factor is not None and abs(float(scaling_factor) - float(made["scaling_factor"])) > 1e-12:
        raise ValueError(f"latent shards in {where!r} are scaled by {made['scaling_factor']} (the VAE's factor at "
                         f"encoding), the recipe sets vae.scaling_factor={scaling_factor}: drop the override or "
                         "re-encode")
    if text_path is not None:
        te = m.get("text_encoder")
        if te is None:
            raise ValueError(f"latent shards in {where!r} hold no text states; the recipe's text encoder "
                             f"{text_path!r} would have to run in the step: re-encode with --text-encoder {text_path}")
        fp = fingerprint_dir(text_path)
        if (fp["config"], fp["weights"]) != (te.get("config"), te.get("weights")):
            raise ValueError(f"latent shards in {where!r} hold text states of {te.get('path')!r}, the recipe's "
                             f"condition.text_path is {text_path!r}: re-encode with --text-encoder {text_path}")
        if max_length is not None and int(max_length) != int(te["max_length"]):
            raise ValueError(f"latent shards in {where!r} hold text states of up to {te['max_length']} tokens, the "
                             f"recipe's condition.max_length is {max_length}: make them equal or re-encode")
    return m


# -- the stream ----------------------------------------------------------------------------------------

def _parse(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)


class LatentStream(SampleStream):
    """Latent shards: no decoding, no sandbox; one batch per latent shape (a bucket of encode-shards)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        m = shard_manifest(self.shards)
        te = m.get("text_encoder")
        self.text_len = int(te["max_length"]) if te else 0
        self.explicit = {(b.frames, b.height, b.width): b.batch_size for b in self.buckets}

    def _job(self, worker: int, epoch: int, pos: int, raw: dict) -> dict:
        return {"epoch": epoch, "pos": pos, "raw": raw, "key": raw.get("__key__", "?"),
                "seed": f"{self.cfg.seed}:latent:{self.rank}:{worker}:{epoch}:{pos}"}

    def _collect(self, job: dict, decoder: Any) -> tuple:
        raw = job["raw"]
        if "safetensors" not in raw:
            return ("skip", "no_latents", f"no .safetensors member (members: "
                                          f"{sorted(k for k in raw if not k.startswith('__'))})")
        try:
            t = _parse(raw["safetensors"])
        except Exception as e:  # noqa: BLE001 - a damaged member is this sample's problem
            return ("skip", "bad_latents", f"cannot read the safetensors member: {type(e).__name__}: {e}")
        mean, std, text = t.get("mean"), t.get("std"), t.get("text")
        if mean is None or mean.dim() != 4 or (std is not None and std.shape != mean.shape):
            return ("skip", "bad_latents", f"mean/std must be [c, t, h, w] of one shape, got "
                                           f"{None if mean is None else tuple(mean.shape)}")
        if self.text_len and (text is None or text.dim() != 2 or text.shape[0] > self.text_len):
            return ("skip", "bad_latents", f"text must be [n <= {self.text_len}, D], got "
                                           f"{None if text is None else tuple(text.shape)}")
        z = mean.float()
        if self.cfg.latent_sample:
            if std is None:
                return ("skip", "bad_latents", "data.latent_sample needs the posterior's std, absent here")
            g = torch.Generator().manual_seed(_rng(job["seed"]).getrandbits(63))
            z = z + std.float() * torch.randn(z.shape, generator=g)
        meta = json_of(raw)
        pixels = tuple(int(meta.get(k, 0)) for k in ("frames", "height", "width"))
        return ("ok", (tuple(z.shape), pixels), (z, None if text is None else text.float()), meta)

    def _on_sample(self, info: dict, key: str, counters: Counters) -> None:
        if self.buckets and info.get("bucket"):
            counters.add(f"bucket/{info['bucket']}")

    def _batch_size(self, key: tuple) -> int:
        _, pixels = key
        if pixels in self.explicit:
            return self.explicit[pixels]
        if min(pixels) < 1:
            return self.cfg.batch_size
        return bucketing.batch_size_for(*pixels, self.cfg.batch_size, self.cfg.num_frames, self.cfg.size)

    def _new_batch(self, key: tuple, worker: int) -> dict:
        return {"z": [], "text": [], "caption": [], "key": [], "positions": []}

    def _put(self, batch: dict, sample: tuple, job: dict) -> None:
        batch["z"].append(sample[0])
        batch["text"].append(sample[1])

    def _emit(self, batch: dict) -> dict:
        latents = torch.stack(batch["z"])
        if not self.text_len:
            return {"latents": latents, "text": None, "text_mask": None}
        dim = batch["text"][0].shape[1]
        text = torch.zeros(len(batch["text"]), self.text_len, dim)
        mask = torch.zeros(len(batch["text"]), self.text_len, dtype=torch.bool)
        for i, t in enumerate(batch["text"]):
            text[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = True
        return {"latents": latents, "text": text, "text_mask": mask}


# -- what a training step takes from a batch -------------------------------------------------------------

def step_inputs(batch: dict[str, Any], vae: Any, text_encoder: Any, device: torch.device | str
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(x0 [B, c, t, h, w] float32, text [B, L, D] or None, text_mask [B, L] or None)`` for one step.

    A latent batch (``"latents"`` in it) gives its latents and text states as they are: no VAE, no text
    encoder runs. A video batch is normalised on the device (uint8 -> [-1, 1]), encoded by ``vae``, and its
    captions by ``text_encoder`` (a frozen encoder with ``encode(list[str])``; None: no text states).
    """
    if "latents" in batch:
        x0 = batch["latents"].to(device).float()
        text, mask = batch.get("text"), batch.get("text_mask")
        return x0, (None if text is None else text.to(device)), (None if mask is None else mask.to(device))
    from .pipeline import to_float

    video = to_float(batch["video"].to(device))
    with torch.no_grad():
        x0 = vae.encode(video.float()).float()
        if text_encoder is None:
            return x0, None, None
        text, mask = text_encoder.encode(list(batch["caption"]))
    return x0, text.to(device), mask.to(device)
