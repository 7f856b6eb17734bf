"""functional-heads: training-free functional head identification and class-conditioned rescaling for
vision-language models (arXiv 2510.10285). Layers are counted from 0.

The package, from the bottom layer up (a module imports only from its own layer or those below):
`utils` (plumbing), `models` (architectures, loading, version differences), `core` (the method),
`evaluation` and `testbed`, `tuning`, and the apps (`apps`: CLI and demo; `integrations`).
"""

from .core.check import check_model
from .core.config import PRESETS, RescaleConfig
from .core.dynamic import dynamic
from .core.export import export_folded
from .core.heads import HeadMap, calibrate, identify_heads
from .core.ratios import visual_attention_ratios
from .core.rescale import fold, is_folded, rescale, unfold
from .models.architectures import ARCHITECTURES, ArchSpec, ModelLayout, locate
from .models.loading import load_model, load_processor, prompt_inputs
from .testbed.bundled import bundled_model_path, bundled_settings
from .utils import moved

moved.install()
__getattr__ = moved.forward_names(__name__)  # old module paths, e.g. fh.heads

__version__ = "0.1.0"
__all__ = ["ARCHITECTURES", "ArchSpec", "HeadMap", "ModelLayout", "PRESETS", "RescaleConfig", "bundled_model_path",
           "bundled_settings", "calibrate", "check_model", "dynamic", "export_folded", "fold", "identify_heads",
           "is_folded", "load_model", "load_processor", "locate", "prompt_inputs", "rescale", "unfold",
           "visual_attention_ratios"]
