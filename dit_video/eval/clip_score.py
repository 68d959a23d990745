"""CLIP score (CLIPSIM): how well each frame matches its caption, from a local Hugging Face CLIP directory.

::

    caption -> CLIP text embedding e_text [D] (unit norm)
    frames [T, H, W, 3] -> CLIP image embeddings e_t [T, D] (unit norm; the directory's image processor)
    clip_score = mean_t  e_t . e_text          (cosine, -1..1; higher = closer to the caption)

CLIPSIM as in VideoGPT / Latte: the cosine similarity of each frame to the caption, averaged over
frames (and over videos). torchmetrics' ``clip_score`` reports 100 * max(cosine, 0) of the same
embeddings. The figure depends on the CLIP model: compare runs with one model. Nothing is downloaded:
``--clip DIR`` is a directory written by ``save_pretrained`` (config.json, weights, tokenizer and
preprocessor files), e.g. a local copy of openai/clip-vit-base-patch32, loaded with local_files_only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class ClipScorer:
    """A local CLIP model and processor; :meth:`score` gives a clip's per-frame cosine to its caption."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--clip: {path} is not a Hugging Face CLIP directory (no config.json); "
                                    "pass a folder written by CLIPModel.save_pretrained with its processor files")
        from transformers import CLIPModel, CLIPProcessor

        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)

    @torch.no_grad()
    def frame_scores(self, frames: np.ndarray, caption: str) -> np.ndarray:
        """Cosine of each frame's image embedding to the caption's text embedding, ``[T]`` float64."""
        inputs = self.processor(text=[caption], images=list(np.asarray(frames)), return_tensors="pt",
                                padding=True, truncation=True)
        out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        img = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)  # [T, D]
        txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)  # [1, D]
        return (img @ txt.T)[:, 0].double().cpu().numpy()

    def score(self, frames: np.ndarray, caption: str) -> float:
        """CLIPSIM of one clip: the mean over frames of the cosine to ``caption``."""
        return float(self.frame_scores(frames, caption).mean())
