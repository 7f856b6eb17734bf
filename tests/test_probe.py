import random

import torch

from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.evaluation.probe import image_token_states, linear_probe
from functional_heads.models.compat import projected_features
from functional_heads.models.loading import prompt_inputs


def test_image_tokens_are_what_the_vision_side_hands_the_decoder(bundled_vlm):
    model, processor = bundled_vlm
    rng = random.Random(0)
    images = [shapes.draw_scene(rng).render() for _ in range(5)]
    states = image_token_states(model, processor, images, batch_size=2)
    assert states.shape[:2] == (5, 9) and states.dtype == torch.float32  # one token per cell
    inputs = prompt_inputs(processor, images, ["x"] * 5)
    with torch.no_grad():
        features = projected_features(model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]))
    features = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features
    torch.testing.assert_close(states.reshape(-1, states.shape[-1]), features.float())


def synthetic(n_groups, per_group, dim=12, seed=0, informative=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_groups * per_group, dim, generator=g)
    y = (x[:, :3].argmax(-1) if informative else torch.randint(0, 3, (len(x),), generator=g))
    groups = torch.arange(n_groups).repeat_interleave(per_group).tolist()
    return x, y, groups


def test_a_linearly_readable_label_is_read_and_noise_is_not():
    x, y, _ = synthetic(300, 4)
    tx, ty, groups = synthetic(200, 4, seed=1)
    readable = linear_probe(x, y, tx, ty, groups)
    assert readable["accuracy"] > 0.95 and readable["ci"][0] <= readable["accuracy"] <= readable["ci"][1]
    assert readable["test_groups"] == 200 and readable["test_rows"] == 800
    x, y, _ = synthetic(300, 4, informative=False)
    tx, ty, groups = synthetic(200, 4, seed=1, informative=False)
    noise = linear_probe(x, y, tx, ty, groups)
    assert noise["accuracy"] < 0.42  # chance is 1/3


def test_the_interval_resamples_whole_groups():
    x, y, _ = synthetic(300, 4)
    tx, ty, _ = synthetic(40, 25, seed=2)
    by_row = linear_probe(x, y, tx, ty)
    one_group_per_row = linear_probe(x, y, tx, ty, list(range(len(ty))))
    assert by_row["ci"] == one_group_per_row["ci"]
    in_blocks = linear_probe(x, y, tx, ty, torch.arange(40).repeat_interleave(25).tolist())
    assert in_blocks["test_groups"] == 40 and in_blocks["accuracy"] == by_row["accuracy"]
