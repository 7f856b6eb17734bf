import json
import re

import pytest

from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.evaluation.benchmarks.shapes_generator import CELL, COLOURS, GRID, Scene, make_item, score


def count(scene, colour=None, shape=None):
    n = 0
    for cell in scene.cells:
        if cell is not None and colour in (None, cell[0]) and shape in (None, cell[1]):
            n += 1
    return n


def expected_answer(item):
    """The answer recomputed from the scene and the question's words alone."""
    q, scene = item.question.split(), item.scene
    if item.family == "count_colour":
        return str(count(scene, colour=q[2]))
    if item.family == "count_shape":
        return str(count(scene, shape=q[2].rstrip("s")))
    if item.family == "attribute":
        row, col = int(q[q.index("row") + 1]), int(q[q.index("column") + 1])
        colour, shape = scene.cells[(row - 1) * GRID + col - 1]
        return colour if q[1] == "colour" else shape
    if item.family == "exist":
        return "yes" if count(scene, q[3], q[4]) else "no"
    if item.family == "sum":
        return str(count(scene, colour=q[2]) + count(scene, colour=q[4]))
    if item.family == "compare":
        return "yes" if count(scene, colour=q[3]) > count(scene, colour=q[6]) else "no"
    if item.family == "points":
        colour, wc, shape, ws = q[1], int(q[4]), q[8], int(q[10])
        return str(count(scene, colour=colour) * wc + count(scene, shape=shape) * ws)
    if item.family == "total":  # "each red object scores 9 , each green object scores 5 , ..."
        return str(sum(count(scene, colour=q[i + 1]) * int(q[i + 4]) for i, w in enumerate(q) if w == "each"))
    raise AssertionError(item.family)


def test_deterministic():
    assert make_item("dev", 17) == make_item("dev", 17)
    assert [it.id for it in shapes.items("calib")] == [it.id for it in shapes.items("calib")]
    assert make_item("dev", 17) != make_item("test", 17)


def test_splits_are_disjoint_and_sized():
    keys = {split: [it.key() for it in shapes.items(split)] for split in shapes.EVAL_SIZES}
    assert {s: len(k) for s, k in keys.items()} == {"calib": 64, "dev": 400, "test": 1200, "dev2": 2400, "test2": 6000}
    for split, split_keys in keys.items():
        assert len(set(split_keys)) == len(split_keys), f"{split} repeats an item"
    seen = set()
    for split in sorted(keys, key=shapes.SPLITS.get):  # each split disjoint from every earlier one
        assert not seen & set(keys[split]), split
        seen |= set(keys[split])
    evaluation = shapes.eval_keys()
    assert evaluation == seen
    train = shapes.items("train", n=3000, exclude=evaluation)
    assert not {it.key() for it in train} & evaluation


@pytest.mark.parametrize("split", ["dev", "test"])
def test_answers_and_chains_are_right_for_the_drawn_scene(split):
    for item in shapes.items(split, n=700):
        assert item.answer == expected_answer(item), item
        for key, value in shapes.stated_facts(item.target).items():
            assert item.scene.fact(key) == value, (item, key)
        assert score(item, item.target).correct


def test_every_family_and_exist_variant_is_present():
    test = list(shapes.items("test"))
    assert {it.family for it in test} == set(shapes.FAMILIES)
    variants = {it.variant for it in test if it.family == "exist"}
    assert variants == {"positive", "random", "popular", "adversarial"}
    for it in test:
        if it.variant == "adversarial":  # both features are in the scene, never bound together
            colour, shape = it.question.split()[3:5]
            assert count(it.scene, colour) and count(it.scene, shape=shape) and not count(it.scene, colour, shape)


def test_rendering_matches_the_scene():
    scene = make_item("test", 3).scene
    image = scene.render()
    assert image.size == (GRID * CELL, GRID * CELL)
    for index, cell in enumerate(scene.cells):
        centre = image.getpixel(((index % GRID) * CELL + CELL // 2, (index // GRID) * CELL + CELL // 2 + 2))
        assert centre == (COLOURS[cell[0]] if cell else (255, 255, 255))


def scene_with(*objects):
    cells = [None] * (GRID * GRID)
    for index, colour, shape in objects:
        cells[index] = (colour, shape)
    return Scene(tuple(cells))


SUM = shapes.Item("x", "test", "sum", scene_with((0, "red", "circle"), (4, "red", "square"), (8, "blue", "circle")),
                  "how many red or blue shapes are there ?", "red : r1c1 r2c2 = 2 . blue : r3c3 = 1 . 2 + 1 = 3", "3")
RED, BLUE = "red : r1c1 r2c2 = 2", "blue : r3c3 = 1"


@pytest.mark.parametrize("output, correct, error", [
    (f"<think> {RED} . {BLUE} . 2 + 1 = 3 </think> <answer> 3 </answer>", True, None),
    (f"<think> red : r1c1 r2c2 r3c1 = 3 . {BLUE} . 3 + 1 = 4 </think> <answer> 4 </answer>", False, "perceptual"),
    (f"<think> red : r1c1 r2c3 = 2 . {BLUE} . 2 + 1 = 3 </think> <answer> 4 </answer>", False, "location"),
    ("<think> red : r1c1 r2c3 = 2 . blue : r3c3 = 2 . 2 + 2 = 4 </think> <answer> 4 </answer>", False, "perceptual"),
    (f"<think> red : r1c1 = 2 . {BLUE} . 2 + 1 = 3 </think> <answer> 4 </answer>", False, "location"),  # says 2
    (f"<think> {RED} . {BLUE} . 2 + 1 = 4 </think> <answer> 4 </answer>", False, "drift"),
    (f"<think> {RED} . {BLUE} . 2 + 1 = 3 </think> <answer> 5 </answer>", False, "drift"),  # contradicts its chain
    (f"<think> {RED} . {BLUE} . 2 + 1 = 3 </think>", False, "malformed"),
    ("<think> red : r1c1 = 1 . blue : r2c1 r3c3 = 2 . 1 + 2 = 3 </think> <answer> 3 </answer>", True, None),  # luck
])
def test_failure_modes_on_hand_made_answers(output, correct, error):
    outcome = score(SUM, output)
    assert (outcome.correct, outcome.error) == (correct, error)


def test_a_right_answer_keeps_its_wrong_facts_at_their_level():
    right_count = score(SUM, f"<think> red : r1c1 r3c1 = 2 . {BLUE} . 2 + 1 = 3 </think> <answer> 3 </answer>")
    assert right_count.correct and right_count.wrong_facts == [] and right_count.wrong_locations == ["red"]
    wrong_counts = score(SUM, "<think> red : r1c1 = 1 . blue : r2c1 r3c3 = 2 . 1 + 2 = 3 </think> <answer> 3 </answer>")
    assert wrong_counts.correct and wrong_counts.wrong_facts == ["red", "blue"]


def test_position_and_combination_facts():
    item = shapes.Item("y", "test", "attribute", scene_with((5, "green", "triangle")),
                       "what colour is the object at row 2 column 3 ?", "r2c3 : green triangle", "green")
    assert score(item, "<think> r2c3 : blue triangle </think> <answer> blue </answer>").error == "perceptual"
    assert score(item, "<think> r2c3 : green triangle </think> <answer> triangle </answer>").error == "drift"
    assert item.scene.fact("green triangle") == "r2c3 = 1" and item.scene.fact("r1c1") == "empty"
    assert item.scene.fact("red") == "none = 0" and item.scene.fact("triangle") == "r2c3 = 1"


def test_write_split(tmp_path):
    path = shapes.write_split("dev", tmp_path, n=7)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 7 and (tmp_path / rows[0]["image"]).is_file()
    assert re.fullmatch(r"<think> .* </think> <answer> .* </answer>", rows[0]["target"])
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        list(shapes.items("val"))
