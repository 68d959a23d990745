"""The VideoDiT backbone, its building blocks, and weight conversion from Latte."""

from .convert import config_from_diffusers_latte, from_diffusers_latte, from_latte_checkpoint
from .videodit import VideoDiT, VideoDiTBlock

__all__ = ["VideoDiT", "VideoDiTBlock", "config_from_diffusers_latte", "from_diffusers_latte", "from_latte_checkpoint"]
