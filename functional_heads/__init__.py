"""functional-heads: training-free functional head identification and class-conditioned rescaling for
vision-language models (arXiv 2510.10285)."""

from .architectures import ARCHITECTURES, ArchSpec, locate
from .config import PRESETS, RescaleConfig
from .ratios import visual_attention_ratios

__version__ = "0.1.0"
