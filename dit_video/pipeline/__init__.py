"""Inference: from exported weights (or a live model) and captions to videos on disk.

>>> from dit_video.pipeline import SamplingPipeline, write_video
>>> pipe = SamplingPipeline.from_pretrained("out/model")
>>> videos = pipe.generate(["a red square moving right"], steps=32, guidance_scale=3.0)
>>> write_video(videos[0], "red.mp4")

- :class:`Conditioner` (captions/labels -> model kwargs, null condition, dropout) and
  :class:`ConditionedDiT` (the trained module: VideoDiT + a learned text encoder);
- :class:`SamplingPipeline`; :func:`load_export` / :func:`write_export` (export directories);
- :mod:`.video` (mp4/gif writing, conditioning clips), :mod:`.plots` (filmstrips, loss curves);
- :mod:`.config` (the recipe sections inference reads) and :mod:`.safe_yaml` (recipes read without resolvers).

Nothing here imports ``dit_video.train``.
"""

from __future__ import annotations

from typing import Any

from .config import ConditionConfig, PipelineConfig, SampleConfig, VAEConfig, recipe_from_yaml

__all__ = ["ConditionConfig", "ConditionedDiT", "Conditioner", "PipelineConfig", "SampleConfig", "SamplingPipeline",
           "VAEConfig", "build_vae", "load_export", "read_video", "recipe_from_yaml", "write_export", "write_video"]

_LAZY = {"ConditionedDiT": "conditioner", "Conditioner": "conditioner", "SamplingPipeline": "sampling",
         "build_vae": "vae", "load_export": "weights", "write_export": "weights", "write_video": "video",
         "read_video": "video"}


def __getattr__(name: str) -> Any:  # torch-heavy parts load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dit_video.pipeline' has no attribute {name!r}")
