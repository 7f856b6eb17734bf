"""functional-heads: training-free functional head identification and class-conditioned rescaling for
vision-language models (arXiv 2510.10285). Layers are counted from 0."""

from .architectures import ARCHITECTURES, ArchSpec, ModelLayout, locate
from .bundled import bundled_model_path, bundled_settings
from .config import PRESETS, RescaleConfig
from .dynamic import dynamic
from .export import export_folded
from .heads import HeadMap, calibrate, identify_heads
from .loading import load_model, load_processor, prompt_inputs
from .ratios import visual_attention_ratios
from .rescale import fold, is_folded, rescale, unfold

__version__ = "0.1.0"
__all__ = ["ARCHITECTURES", "ArchSpec", "HeadMap", "ModelLayout", "PRESETS", "RescaleConfig", "bundled_model_path",
           "bundled_settings", "calibrate", "dynamic", "export_folded", "fold", "identify_heads", "is_folded",
           "load_model", "load_processor", "locate", "prompt_inputs", "rescale", "unfold", "visual_attention_ratios"]
