"""dit-video: train and sample spatiotemporal video diffusion transformers on fused kernels."""

from .config import PRESETS, VideoDiTConfig
from .models import VideoDiT

__version__ = "0.1.0"
__all__ = ["PRESETS", "VideoDiT", "VideoDiTConfig", "__version__"]
