"""What the visual tokens encode: the image tokens as the text decoder receives them (after the vision
encoder and its projector), and a linear probe (multinomial logistic regression) of a label per token, with
a bootstrap interval that resamples whole images (the tokens of one image are not independent)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..models.architectures import locate
from ..models.loading import prompt_inputs, to_model_device
from ..utils.errors import UserError
from ..utils.progress import progress as progress_lines


class _Captured(Exception):
    """Stops the forward pass once the decoder's inputs are in hand."""


@torch.no_grad()
def image_token_states(model, processor, images: Sequence, prompt: str = "describe the image .", batch_size: int = 32,
                       progress: bool = False) -> torch.Tensor:
    """[images, tokens, dim] float32: each image's tokens as the text decoder receives them (its input
    embeddings at the image token positions). Every image must give the same number of tokens."""
    layout = locate(model)
    decoder = model.get_decoder()
    states = []

    def capture(module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise RuntimeError("The text decoder was not called with inputs_embeds; cannot read the image tokens.")
        captured.append(embeds)
        raise _Captured

    handle = decoder.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with progress_lines("image tokens", len(images), unit="images", enabled=progress) as advance:
            for lo in range(0, len(images), batch_size):
                chunk = list(images[lo:lo + batch_size])
                inputs = to_model_device(prompt_inputs(processor, chunk, [prompt] * len(chunk)), model)
                captured: list[torch.Tensor] = []
                try:
                    model(**inputs)
                except _Captured:
                    pass
                is_image = (inputs["input_ids"] == layout.image_token_id).to(captured[0].device)
                counts = is_image.sum(-1)
                if not bool((counts == counts[0]).all()) or (states and int(counts[0]) != states[0].shape[1]):
                    raise UserError("The images give different numbers of image tokens; probe images of one size.")
                states.append(captured[0][is_image].float().reshape(len(chunk), int(counts[0]), -1).cpu())
                advance(len(chunk))
    finally:
        handle.remove()
    return torch.cat(states)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 test_groups: Sequence[int] | None = None, l2: float = 1e-3, steps: int = 200,
                 n_resamples: int = 2000, seed: int = 0) -> dict:
    """A multinomial logistic regression fitted on (train_x [n, dim], train_y [n] class ids) and scored on the
    test rows: accuracy, a 95% bootstrap interval resampling `test_groups` (e.g. the image of each row) whole,
    and the accuracy of always answering the train set's commonest class."""
    train_x, test_x = train_x.double(), test_x.double()
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    weight = torch.zeros(train_x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def loss():
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(train_x @ weight + bias, train_y) + l2 * weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimiser.step(loss)
    with torch.no_grad():
        right = ((test_x @ weight + bias).argmax(-1) == test_y).numpy()
    groups = np.arange(len(right)) if test_groups is None else np.asarray(test_groups)
    names, index = np.unique(groups, return_inverse=True)
    per_group_right = np.bincount(index, weights=right, minlength=len(names))
    per_group_rows = np.bincount(index, minlength=len(names))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(n_resamples, len(names)))
    resampled = per_group_right[draws].sum(1) / per_group_rows[draws].sum(1)
    commonest = int(torch.bincount(train_y, minlength=classes).argmax())
    return {"accuracy": float(right.mean()), "ci": [float(np.quantile(resampled, 0.025)),
                                                   float(np.quantile(resampled, 0.975))],
            "majority_baseline": float((test_y == commonest).double().mean()), "test_rows": len(right),
            "test_groups": len(names), "train_rows": len(train_y)}
