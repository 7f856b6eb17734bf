"""Models made of two models' parts: one model's language side with another's vision side, to find which
side a difference between two fine-tunes of one architecture lives in."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..utils.errors import UserError
from .architectures import vision_side


@torch.no_grad()
def copy_vision_side(into: nn.Module, source: nn.Module) -> None:
    """Give `into` the vision side (encoder and projector) of `source`, in place; both of one architecture
    and size. Everything else of `into` (its decoder, embeddings, head) stays as it was."""
    if into.config.model_type != source.config.model_type:
        raise UserError(f"Cannot swap vision sides between a '{into.config.model_type}' and a "
                        f"'{source.config.model_type}' model: give two models of one architecture.")
    targets, donors = vision_side(into), vision_side(source)
    for path, target in targets.items():
        donor = donors[path].state_dict()
        own = target.state_dict()
        wrong = [name for name in own if name not in donor or donor[name].shape != own[name].shape]
        if wrong or set(donor) - set(own):
            first = (wrong or sorted(set(donor) - set(own)))[0]
            raise UserError(f"The vision sides differ in shape at {path}.{first}: give two models of one size.")
        target.load_state_dict(donor)
