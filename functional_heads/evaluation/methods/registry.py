"""The registry of the methods compared in evaluations: small classes, as transformers keeps its attention
functions.

A method says what it needs (`settings_class`, a head map, rescaling settings), what surrounds
`generate()` (`context`), how it decodes (`decode`, or `generate` as a whole), and what identifies its
run (`identity`). `register_method` adds one; `fheads eval`, `fheads demo`, `fheads report` and the
lmms-eval wrapper then find it by name. Packages register theirs on import through the entry-point group
`functional_heads.methods`.

The built-in methods are in `builtin.py`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from ...core.config import RescaleConfig
from ...core.heads import HeadMap
from ...models.loading import check_context, prompt_inputs, to_model_device
from ...utils.errors import UserError
from ...utils.registry import Registry

ENTRY_POINT_GROUP = "functional_heads.methods"


@dataclass
class Generation:
    """What a method generated for a batch of prompts."""

    tokens: torch.Tensor  # [batch, length]
    prompt_length: int  # the generated tokens start at this column
    heads_rescaled: list[float]  # per prompt: the share of heads whose gain was not 1


class Method:
    """Subclass, set `name`, override what differs (`setup`, `context`, `decode` or `generate`, `identity`),
    and decorate with `@register_method`."""

    name: ClassVar[str] = ""
    settings_class: ClassVar[type | None] = None  # a dataclass of the method's own settings (text-parsable)
    # a second model the method uses: (the settings field naming its local folder, the class that loads it)
    extra_model: ClassVar[tuple[str, type] | None] = None
    # methods that work on the image (measure attention to it, contrast it): a prompt without an image is
    # answered by plain decoding, which is where each of them ends when there is no image to work on
    needs_image: ClassVar[bool] = False
    # methods that rescale heads: refused on a folded export (its weights already carry gains)
    rescales: ClassVar[bool] = False
    # its model calls have one row per prompt, in order (CGD's hold samples of one prompt): errors name rows
    one_row_per_prompt: ClassVar[bool] = True

    def __init__(self, heads: HeadMap | None = None, config: RescaleConfig | None = None, settings: Any = None):
        self.heads, self.config = heads, config
        if self.settings_class is None:
            if settings is not None:
                raise UserError(f"Method '{self.name}' takes no settings of its own.")
        elif settings is None:
            settings = self.settings_class()
        elif not isinstance(settings, self.settings_class):
            raise TypeError(f"Method '{self.name}' takes a {self.settings_class.__name__}, "
                            f"got {type(settings).__name__}.")
        self.settings = settings
        self.setup()

    def setup(self) -> None:
        """Check what the method needs and load what it uses (called once, when it is made)."""
        if self.extra_model is not None:
            field_name, loader = self.extra_model
            self.extra = loader(getattr(self.settings, field_name))

    @classmethod
    def from_options(cls, options: dict[str, str], **kwargs) -> "Method":
        """The method with its settings given as text, e.g. {"alpha": "1.0"} (CLI and lmms-eval)."""
        if not options:
            return cls(**kwargs)
        if cls.settings_class is None:
            raise UserError(f"Method options are for {', '.join(n for n, m in METHODS.items() if m.settings_class)} "
                            f"only; '{cls.name}' takes none.")
        return cls(settings=_parse_settings(cls.name, cls.settings_class, options), **kwargs)

    def identity(self) -> dict:
        """Every setting of the method that affects its answers (part of a run folder's identity)."""
        identity = {"method": self.name}
        if self.settings is not None:
            identity[self.name] = asdict(self.settings)
        return identity

    def inert_warning(self) -> str | None:
        """One line if the method, as set up, changes nothing against vanilla (e.g. gains of 1), else None."""
        return None

    def static_gains(self) -> torch.Tensor | None:
        """The fixed [layers, heads] gains this method amounts to, for an engine that can only change the
        model's weights (vLLM, where they are folded into o_proj): None for plain decoding. A method that does
        more (per-input heads, its own decoding or hooks) cannot be folded: `NotFoldable`, naming the method."""
        if all(getattr(type(self), name) is getattr(Method, name) for name in ("context", "decode", "generate")):
            return None
        raise NotFoldable(self.name)

    def context(self, model):
        """What surrounds `generate()`; what it yields goes to `heads_rescaled`."""
        return nullcontext()

    def heads_rescaled(self, handle, batch: int) -> list[float]:
        return [0.0] * batch

    def decode(self, model, processor, inputs: dict, images, prompts, **generate_kwargs) -> torch.Tensor:
        return model.generate(**inputs, **generate_kwargs)

    @torch.no_grad()
    def generate(self, model, processor, images, prompts, **generate_kwargs) -> Generation:
        """Generated token ids for one image and one prompt per row (images=None: text-only prompts), batched
        with left padding. Raises `PromptTooLong` (naming the rows) for prompts longer than the model's context."""
        inputs = prompt_inputs(processor, images, prompts)
        check_context(model, inputs)
        inputs = to_model_device(inputs, model)
        if images is None and self.needs_image:
            return Generation(model.generate(**inputs, **generate_kwargs), inputs["input_ids"].shape[1],
                              [0.0] * len(prompts))
        with self.context(model) as handle:
            tokens = self.decode(model, processor, inputs, images, prompts, **generate_kwargs)
            return Generation(tokens, inputs["input_ids"].shape[1], self.heads_rescaled(handle, len(prompts)))


class NotFoldable(UserError):
    """A method that does more than fixed head gains, so it cannot run on an engine that only takes weights."""

    def __init__(self, name: str):
        self.method = name
        super().__init__(f"Method '{name}' changes more than fixed head gains (per-input heads, or decoding of its "
                         "own), which cannot be folded into the weights of a vLLM engine: run it with --engine hf.")


METHODS: Registry[type[Method]] = Registry("method", Method, ENTRY_POINT_GROUP)


def register_method(cls: type[Method]) -> type[Method]:
    """Add a method to the registry under its `name` (a class decorator)."""
    return METHODS.register(cls)


def load_plugins() -> None:
    """Import the methods that installed packages declare under the entry-point group (once)."""
    METHODS.load_plugins()


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str, options: dict[str, str] | None = None, heads: HeadMap | None = None,
               config: RescaleConfig | None = None) -> Method:
    """The registered method `name`, made with its options given as text, the head map and the settings."""
    return METHODS.get(name).from_options(options or {}, heads=heads, config=config)


def _parse_settings(name: str, settings_class: type, options: dict[str, str]):
    types = {f.name: f.type for f in fields(settings_class)}
    unknown = set(options) - set(types)
    if unknown:
        raise UserError(f"{name} has no setting {', '.join(sorted(unknown))} (it has: {', '.join(types)}).")
    parse = {"int": int, "float": float, "str": str, "bool": lambda v: v.lower() in ("1", "true", "yes")}
    try:
        return settings_class(**{k: parse[getattr(types[k], "__name__", types[k])](v) for k, v in options.items()})
    except ValueError as err:
        raise UserError(f"{name}: a setting has the wrong type ({err}).") from err
