"""Metrics of generated videos: flicker, warping error, motion, subject persistence; FVD / KVD and CLIP
score from weights the user brings (never downloaded).

One metric per module, its definition in the module's docstring: :mod:`.flicker`, :mod:`.warping`,
:mod:`.motion` (the last two share :mod:`.flow`), :mod:`.persistence`, :mod:`.frechet` and :mod:`.kvd`
(on :mod:`.i3d` features), :mod:`.clip_score`. :func:`evaluate_clips` runs them over a set of clips;
:func:`scalars` flattens its aggregate for logging. transformers and the I3D file are loaded only when asked for.
"""

from __future__ import annotations

from .evaluate import evaluate_clip, evaluate_clips, markdown, scalars, summary_line, to_json
from .flicker import temporal_flicker
from .motion import motion
from .persistence import subject_persistence
from .warping import warping_error

__all__ = ["evaluate_clip", "evaluate_clips", "markdown", "scalars", "summary_line", "to_json", "temporal_flicker",
           "motion", "subject_persistence", "warping_error"]
