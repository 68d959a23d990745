"""I3D features of videos from a user-supplied TorchScript file (the StyleGAN-V ``i3d_torchscript.pt``).

The convention of StyleGAN-V's and Latte's FVD code for that file (a Kinetics-400 I3D, the one the
original FVD used, exported to TorchScript)::

    frames uint8 [T, H, W, 3] -> float [T, 3, H, W] / 255
      -> resize so the shorter side is 224 (bilinear), centre crop 224 x 224
      -> x = 2 * x - 1 in [-1, 1], laid out [B, 3, T, 224, 224]
      -> model(x, rescale=False, resize=False, return_features=True) -> [B, 400] (logits before the softmax)

(``rescale=False, resize=False``: the resizing and scaling are done here, as above, not inside the
model.) The FVD protocol takes 16 consecutive frames per video. Nothing is downloaded: the user brings
the file (``--i3d PATH``); torch.jit.load runs the TorchScript code in it, so load only a file you trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 224


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript I3D at ``path``, in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--i3d: no TorchScript file at {path} (bring the StyleGAN-V i3d_torchscript.pt)")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as e:
        raise ValueError(f"--i3d: {path} is not a TorchScript module ({str(e).splitlines()[0][:200]})") from None


def preprocess(frames: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[3, T, size, size]`` in [-1, 1] (shorter side resized, centre crop)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # [T, 3, H, W]
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    th, tw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
    y0, x0 = (th - size) // 2, (tw - size) // 2
    x = x[..., y0:y0 + size, x0:x0 + size]
    return (2 * x - 1).permute(1, 0, 2, 3).contiguous()


@torch.no_grad()
def i3d_features(model: torch.nn.Module, clips: Sequence[np.ndarray], batch_size: int = 8,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """Features ``[N, F]`` float64 of ``clips`` (uint8 ``[T, H, W, 3]`` each; equal T within a batch)."""
    out: list[np.ndarray] = []
    i = 0
    while i < len(clips):
        t = clips[i].shape[0]
        j = i
        while j < len(clips) and j - i < batch_size and clips[j].shape[0] == t:
            j += 1
        x = torch.stack([preprocess(c) for c in clips[i:j]]).to(device)
        try:
            feats = model(x, rescale=False, resize=False, return_features=True)
        except RuntimeError as e:  # e.g. too few frames for the model's temporal kernels
            raise ValueError(f"--i3d: the model failed on a batch of shape {tuple(x.shape)} "
                             f"({str(e).strip().splitlines()[-1][:200]}); the FVD protocol uses 16 frames") from None
        if feats.dim() != 2 or feats.shape[0] != j - i:
            raise ValueError(f"--i3d: the model returned shape {tuple(feats.shape)} for a batch of {j - i}; "
                             "expected [batch, features] (the StyleGAN-V i3d_torchscript.pt signature)")
        out.append(feats.double().cpu().numpy())
        i = j
    return np.concatenate(out) if out else np.zeros((0, 0))
