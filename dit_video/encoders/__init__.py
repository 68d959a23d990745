"""VAE and text-encoder adapters (local paths only; nothing downloads).

- :class:`VAE`: ``encode(video) -> latents``, ``decode(latents) -> video``, ``scaling_factor``,
  ``latent_channels``, ``temporal_downsample``, ``spatial_downsample``; :class:`IdentityVAE` (pixel
  space) and :class:`DiffusersVAE` (``DiffusersVAE.from_local(path)``).
- :class:`TextEncoder`: ``encode(list[str]) -> (tokens [B, L, D], mask [B, L] bool)`` and ``dim``;
  :class:`HFTextEncoder` (``HFTextEncoder.from_local(path, max_length, cache_dir=...)``) and
  :class:`TinyTextEncoder` (learned, for the demo).
"""

from .cache import EmbeddingCache
from .paths import require_local_dir
from .text import HFTextEncoder, TextEncoder
from .tiny_text import TinyTextEncoder
from .vae import VAE, DiffusersVAE, IdentityVAE

__all__ = [
    "VAE",
    "DiffusersVAE",
    "EmbeddingCache",
    "HFTextEncoder",
    "IdentityVAE",
    "TextEncoder",
    "TinyTextEncoder",
    "require_local_dir",
]
