"""Attention functions that run only inside a scope, with state of their own.

transformers picks each layer's attention function by name (`AttentionInterface`) and builds the masks
for it by the same name (`AttentionMaskInterface`; a name without a mask entry silently gets no masks). A
`ScopedAttention` registers both under one name. `active(layout, state, base=...)` makes the text decoder
(only it) run that name within a block, holds what the function reads in a context variable, and
restores both on exit, also on error. The masks handed out are those of the block's `base` kernel, so a
function that wraps the kernel gives it exactly the masks it would get on its own.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..models.architectures import ModelLayout
from ..models.compat import attention_switched

State = TypeVar("State")


def base_attention(name: str, module) -> Callable:
    """The attention kernel registered as `name` ("eager", "sdpa", ...), as `module`'s model runs it."""
    if name == "eager":  # transformers keeps each model's eager kernel in its modeling module
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[name]


@dataclass(frozen=True)
class Scope(Generic[State]):
    """What a scoped attention function reads during one `ScopedAttention.active` block."""

    state: State
    layer_of: dict[int, int]  # id(attention module) -> layer index
    base: str  # the kernel whose masks the decoder gets, and that `kernel` returns

    def layer(self, module) -> int | None:
        """The text decoder layer of attention `module` (None for any other attention module)."""
        return self.layer_of.get(id(module))

    def kernel(self, module) -> Callable:
        """The base attention kernel, as `module`'s model runs it."""
        return base_attention(self.base, module)


class ScopedAttention(Generic[State]):
    """An attention function registered as `name` (with its mask entry) that runs only inside `active`.

    `function` has the signature of transformers' attention functions and calls `current()` for its
    scope; `inside` names, in the error raised elsewhere, where the function may run.
    """

    def __init__(self, name: str, function: Callable, *, inside: str):
        self.name = name
        self.inside = inside
        self._scope: ContextVar[Scope[State] | None] = ContextVar(name, default=None)
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, self._mask)

    def current(self) -> Scope[State]:
        """The scope of the innermost active block; a RuntimeError outside every block."""
        scope = self._scope.get()
        if scope is None:
            raise RuntimeError(f"attn_implementation '{self.name}' is only valid inside {self.inside}.")
        return scope

    def _mask(self, *args, **kwargs):
        return ALL_MASK_ATTENTION_FUNCTIONS[self.current().base](*args, **kwargs)

    @contextmanager
    def active(self, layout: ModelLayout, state: State, *, base: str) -> Iterator[Scope[State]]:
        """Within the block the text decoder of `layout` runs this function, which sees `state` and the
        masks of `base`; the decoder's attention implementation and any outer block come back on exit."""
        scope = Scope(state, {id(attention): i for i, attention in enumerate(layout.attentions)}, base)
        token = self._scope.set(scope)
        try:
            with attention_switched(layout.model, layout.text_configs, self.name):
                yield scope
        finally:
            self._scope.reset(token)


def eager_attention_with(edit: Callable[[torch.Tensor], torch.Tensor], query, key, value, attention_mask,
                         scaling=None, softcap=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention whose pre-mask logits [batch, heads, q_len, kv_len] (float32) pass through `edit`:
    (output [batch, q_len, heads, dim], weights). Grouped-query keys are shared as `repeat_kv` does."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = torch.matmul(query, key.transpose(2, 3)).float() * (scaling or query.shape[-1] ** -0.5)
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores = edit(scores)
    if attention_mask is not None:
        mask = attention_mask[..., :scores.shape[-1]]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    weights = torch.softmax(scores, -1).to(value.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def key_columns(mask: torch.Tensor, kv_len: int) -> torch.Tensor:
    """A [batch, prompt_len] key mask widened (False) or cut to `kv_len` keys: decode steps add keys after
    the prompt, which the mask never marks."""
    out = torch.zeros(mask.shape[0], kv_len, dtype=torch.bool, device=mask.device)
    width = min(mask.shape[1], kv_len)
    out[:, :width] = mask[:, :width]
    return out
