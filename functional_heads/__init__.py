"""functional-heads: training-free functional head identification and class-conditioned rescaling for
vision-language models (arXiv 2510.10285). Layers are counted from 0.

The package, from the bottom layer up (a module imports only from its own layer or those below):
`utils` (plumbing), `models` (architectures, loading, version differences), `core` (the method),
`evaluation` and `testbed`, `tuning`, and the apps (`apps`: CLI and demo; `integrations`).

The public names below are imported when first used (`utils.lazy`): `import functional_heads` alone loads
neither torch nor transformers.
"""

from .utils import lazy, moved

_EXPORTS = {name: module for module, names in {
    ".core.check": ("check_model",), ".core.config": ("PRESETS", "RescaleConfig"), ".core.dynamic": ("dynamic",),
    ".core.export": ("export_folded",), ".core.heads": ("HeadMap", "calibrate", "identify_heads", "thresholds_for_shares"),
    ".core.ratios": ("visual_attention_ratios",), ".core.rescale": ("fold", "is_folded", "rescale", "unfold"),
    ".models.architectures": ("ARCHITECTURES", "ArchSpec", "ModelLayout", "locate"),
    ".models.loading": ("load_model", "load_processor", "prompt_inputs"),
    ".testbed.bundled": ("bundled_model_path", "bundled_settings"),
}.items() for name in names}

moved.install()
# the public names, then old module paths (e.g. fh.heads) and subpackages
__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS, moved.forward_names(__name__))

__version__ = "0.1.0"
__all__ = sorted(_EXPORTS)
