"""`shapes`: a synthetic benchmark that separates perception from reasoning.

Each item is a small scene (a 3x3 grid of 16-px cells, each empty or holding one coloured shape) and a
question whose R1-style answer states perceptual facts first and reasons over them:

    <think> red : r1c2 r3c1 = 2 . circle : r2c2 = 1 . 2 * 4 = 8 . 1 * 3 = 3 . 8 + 3 = 11 </think> <answer> 11 </answer>

so that every wrong answer can be classified exactly, at the level the question needs: a stated count or
attribute that contradicts the image is a *perceptual error*; right counts and attributes with a wrong
list of cells is a *location error* (the question never needs the cells); right facts but a wrong answer
is *reasoning drift* (the paper's two failure modes, with location kept apart).
Everything is deterministic given the split and the index.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageDraw

from ...utils.errors import UserError

COLOURS = {"red": (220, 50, 47), "green": (60, 170, 60), "blue": (40, 90, 220)}
SHAPES = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
GRID, CELL = 3, 16  # one cell is one 16x16 area: 2x2 vision patches of 8 px, one merged visual token
SIZE = GRID * CELL
FAMILIES = ("count_colour", "count_shape", "attribute", "exist", "sum", "compare", "points", "total")
SPLITS = {"train": 0, "calib": 1, "dev": 2, "test": 3, "dev2": 4, "test2": 5}
# Multiples of the 8 families. dev2 and test2 are fresh splits, made after dev and test had been read: dev2
# holds enough items to confirm a 2-point gain on half of it (about 776 paired items at a 4% change rate,
# `stats.items_needed`), test2 as many as a CPU evaluates in minutes per method.
EVAL_SIZES = {"calib": 64, "dev": 400, "test": 1200, "dev2": 2400, "test2": 6000}
EXIST_VARIANTS = ("random", "popular", "adversarial")
MAX_OBJECTS = 6
WEIGHTS = (2, 19)  # points per object: two-digit products and sums, where a small model's arithmetic drifts
MAX_ANSWER_TOKENS = 64  # the longest answer (a `total` chain over six objects) is 57 words and an end tag


@dataclass(frozen=True)
class Scene:
    cells: tuple  # row-major, GRID*GRID entries: (colour, shape) or None

    def count(self, colour: str | None = None, shape: str | None = None) -> int:
        return sum(1 for c in self.cells if c and (colour in (None, c[0])) and (shape in (None, c[1])))

    def render(self) -> Image.Image:
        image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for index, cell in enumerate(self.cells):
            if cell is None:
                continue
            x, y = (index % GRID) * CELL, (index // GRID) * CELL
            box, fill = (x + 2, y + 2, x + CELL - 3, y + CELL - 3), COLOURS[cell[0]]
            if cell[1] == "circle":
                draw.ellipse(box, fill=fill)
            elif cell[1] == "square":
                draw.rectangle(box, fill=fill)
            else:
                draw.polygon([(x + CELL // 2, y + 2), (x + 2, y + CELL - 3), (x + CELL - 3, y + CELL - 3)], fill=fill)
        return image

    def fact(self, key: str) -> str:
        """The true value of a fact key. 'rXcY': what that cell holds. A colour, a shape or 'colour shape':
        the cells holding such objects in reading order, then their count ("r1c2 r3c1 = 2", "none = 0"):
        listing where they are makes every count a chain of single-cell readings."""
        words = key.split()
        if len(words) == 1 and (m := re.fullmatch(r"r(\d)c(\d)", key)):
            cell = self.cells[(int(m[1]) - 1) * GRID + int(m[2]) - 1]
            return " ".join(cell) if cell else "empty"
        colour = next((w for w in words if w in COLOURS), None)
        shape = next((w for w in words if w in SHAPES), None)
        where = [f"r{i // GRID + 1}c{i % GRID + 1}" for i, c in enumerate(self.cells)
                 if c and colour in (None, c[0]) and shape in (None, c[1])]
        return f"{' '.join(where) or 'none'} = {len(where)}"


@dataclass(frozen=True)
class Item:
    id: str
    split: str
    family: str
    scene: Scene
    question: str
    chain: str
    answer: str
    variant: str = ""  # exist: random / popular / adversarial negative, or positive

    @property
    def target(self) -> str:
        return f"<think> {self.chain} </think> <answer> {self.answer} </answer>"

    def key(self) -> str:
        """Content hash (scene and question), to keep splits disjoint."""
        return hashlib.sha1(json.dumps([self.scene.cells, self.question]).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        data = asdict(self)
        data["scene"] = [list(c) if c else None for c in self.scene.cells]
        return data


def draw_scene(rng: random.Random) -> Scene:
    n_objects = rng.randint(2, MAX_OBJECTS)
    positions = set(rng.sample(range(GRID * GRID), n_objects))
    return Scene(tuple((rng.choice(list(COLOURS)), rng.choice(SHAPES)) if i in positions else None
                       for i in range(GRID * GRID)))


def _count_colour(scene, rng):
    colour = rng.choice(list(COLOURS))
    return f"how many {colour} shapes are there ?", f"{colour} : {scene.fact(colour)}", \
        str(scene.count(colour=colour)), ""


def _count_shape(scene, rng):
    shape = rng.choice(SHAPES)
    return f"how many {PLURAL[shape]} are there ?", f"{shape} : {scene.fact(shape)}", \
        str(scene.count(shape=shape)), ""


def _attribute(scene, rng):
    index = rng.choice([i for i, c in enumerate(scene.cells) if c])
    row, col = index // GRID + 1, index % GRID + 1
    ask_colour = rng.random() < 0.5
    question = f"what {'colour' if ask_colour else 'shape'} is the object at row {row} column {col} ?"
    colour, shape = scene.cells[index]
    return question, f"r{row}c{col} : {colour} {shape}", colour if ask_colour else shape, ""


def _exist(scene, rng):
    present = {c for c in scene.cells if c}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    if rng.random() < 0.5 or not absent:
        colour, shape = rng.choice(sorted(present))
        variant = "positive"
    else:
        variant = rng.choice(EXIST_VARIANTS)
        colours, shapes = {c for c, _ in present}, {s for _, s in present}
        top_colour = max(COLOURS, key=lambda c: (scene.count(colour=c), c))
        pools = {"random": absent,
                 "popular": [(c, s) for c, s in absent if c == top_colour],  # the scene's most frequent colour
                 "adversarial": [(c, s) for c, s in absent if c in colours and s in shapes]}  # both features seen
        if not pools[variant]:  # no such negative in this scene: it is a random one (same draw, honest label)
            variant = "random"
        colour, shape = rng.choice(pools[variant])
    n = scene.count(colour, shape)
    return f"is there a {colour} {shape} ?", f"{colour} {shape} : {scene.fact(f'{colour} {shape}')}", \
        "yes" if n else "no", variant


def _sum(scene, rng):
    a, b = rng.sample(list(COLOURS), 2)
    x, y = scene.count(colour=a), scene.count(colour=b)
    return f"how many {a} or {b} shapes are there ?", \
        f"{a} : {scene.fact(a)} . {b} : {scene.fact(b)} . {x} + {y} = {x + y}", str(x + y), ""


def _compare(scene, rng):
    a, b = rng.sample(list(COLOURS), 2)
    x, y = scene.count(colour=a), scene.count(colour=b)
    sign = ">" if x > y else "<" if x < y else "="
    return f"are there more {a} shapes than {b} shapes ?", \
        f"{a} : {scene.fact(a)} . {b} : {scene.fact(b)} . {x} {sign} {y}", "yes" if x > y else "no", ""


def _points(scene, rng):
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    wc, ws = rng.randint(*WEIGHTS), rng.randint(*WEIGHTS)
    x, y = scene.count(colour=colour), scene.count(shape=shape)
    question = (f"each {colour} object scores {wc} points and each {shape} scores {ws} points . "
                "what is the total score ?")
    chain = f"{colour} : {scene.fact(colour)} . {shape} : {scene.fact(shape)} . {x} * {wc} = {x * wc} . " \
            f"{y} * {ws} = {y * ws} . " \
            f"{x * wc} + {y * ws} = {x * wc + y * ws}"
    return question, chain, str(x * wc + y * ws), ""


def _total(scene, rng):
    """Three stated counts, three products and two sums: the longest chain, whose last steps reuse numbers
    stated far back (where a small model's reasoning drifts)."""
    weights = {colour: rng.randint(*WEIGHTS) for colour in COLOURS}
    counts = {colour: scene.count(colour=colour) for colour in COLOURS}
    products = [counts[c] * weights[c] for c in COLOURS]
    question = "each " + " , each ".join(f"{c} object scores {w}" for c, w in weights.items()) + \
        " . what is the total score ?"
    steps = [f"{c} : {scene.fact(c)}" for c in COLOURS]
    steps += [f"{counts[c]} * {weights[c]} = {p}" for c, p in zip(COLOURS, products)]
    steps += [f"{products[0]} + {products[1]} = {products[0] + products[1]}",
              f"{products[0] + products[1]} + {products[2]} = {sum(products)}"]
    return question, " . ".join(steps), str(sum(products)), ""


_MAKERS = {"count_colour": _count_colour, "count_shape": _count_shape, "attribute": _attribute, "exist": _exist,
           "sum": _sum, "compare": _compare, "points": _points, "total": _total}


def make_item(split: str, index: int, family: str | None = None) -> Item:
    """Item `index` of `split`: deterministic. Families cycle so that every split holds each equally."""
    rng = random.Random(f"shapes/{split}/{index}")
    family = family or FAMILIES[index % len(FAMILIES)]
    scene = draw_scene(rng)
    question, chain, answer, variant = _MAKERS[family](scene, rng)
    return Item(f"{split}-{index:06d}", split, family, scene, question, chain, answer, variant)


def items(split: str, n: int | None = None, exclude: set[str] | None = None) -> Iterator[Item]:
    """The split's items in order; items whose content appears in an earlier split (or `exclude`), or earlier
    in the same evaluation split, are skipped."""
    if split not in SPLITS:
        raise UserError(f"Unknown split '{split}': choose one of {', '.join(SPLITS)}.")
    n = EVAL_SIZES.get(split) if n is None else n
    taken = set(exclude or ()) | (_earlier_keys(split) if split != "train" else set())
    index, made = 0, 0
    while n is None or made < n:
        item = make_item(split, index)
        index += 1
        if item.key() in taken:
            continue
        if split != "train":  # an evaluation split asks each item once
            taken.add(item.key())
        made += 1
        yield item


def eval_keys() -> set[str]:
    """Content keys of every evaluation split (calib, dev, test): training must skip them."""
    return {item.key() for split in EVAL_SIZES for item in items(split)}


def _earlier_keys(split: str) -> set[str]:
    earlier = [s for s in EVAL_SIZES if SPLITS[s] < SPLITS[split]]
    return {item.key() for s in earlier for item in items(s)}


def vocabulary() -> list[str]:
    """Every word the questions and answers use."""
    words = set("how many shapes are there ? what is the object at row column is there a more than or none "
                "each scores points and total score colour shape object , yes no empty : . + * = > < "
                "<think> </think> <answer> </answer>".split())
    words |= set(COLOURS) | set(SHAPES) | set(PLURAL.values())
    words |= {f"r{r}c{c}" for r in range(1, GRID + 1) for c in range(1, GRID + 1)}
    words |= {str(i) for i in range(0, 2 * MAX_OBJECTS * WEIGHTS[1] + 1)}  # up to the largest points total
    return sorted(words)


# ---------------------------------------------------------------- scoring

@dataclass
class Outcome:
    correct: bool
    error: str | None  # None, "perceptual", "location", "drift" or "malformed"
    predicted: str | None
    wrong_facts: list[str] = field(default_factory=list)  # keys whose count or attribute is wrong
    wrong_locations: list[str] = field(default_factory=list)  # keys with the right count in wrong cells


FAILURES = ("perceptual", "location", "drift", "malformed")
_FACT = re.compile(r"^((?:[a-z]+ [a-z]+)|[a-z]+|r\dc\d) : (.+)$")


def stated_facts(output: str) -> dict[str, str]:
    """The `key : value` statements of the chain of thought."""
    think = re.search(r"<think>(.*?)(</think>|$)", output, re.S)
    facts = {}
    for part in (think[1] if think else "").split(" . "):
        if m := _FACT.match(part.strip()):
            facts[m[1]] = m[2].strip()
    return facts


def fact_errors(scene: Scene, facts: dict[str, str]) -> tuple[list[str], list[str]]:
    """The keys of stated facts that are wrong at the level a question uses them (a count, or what a cell
    holds), and apart from them the keys whose count is right but whose list of cells is not."""
    wrong, misplaced = [], []
    for key, stated in facts.items():
        if not _known(key):
            continue
        true = scene.fact(key)
        if stated == true:
            continue
        is_count = " = " in true
        if is_count and stated.rpartition(" = ")[2] == true.rpartition(" = ")[2]:
            misplaced.append(key)
        else:
            wrong.append(key)
    return wrong, misplaced


def score(item: Item, output: str) -> Outcome:
    """Right or wrong, and for a wrong answer which failure: a stated count or attribute that contradicts
    the scene is a perceptual error; with those right, wrong cell lists are a location error; with every
    fact right, a wrong (or self-contradicting) answer is reasoning drift. A right answer keeps its wrong
    facts too (`wrong_facts`, `wrong_locations`)."""
    match = re.search(r"<answer>(.*?)</answer>", output, re.S)
    predicted = match[1].strip() if match else None
    wrong, misplaced = fact_errors(item.scene, stated_facts(output))
    if predicted == item.answer:
        error = None
    elif wrong:
        error = "perceptual"
    elif misplaced:
        error = "location"
    else:
        error = "malformed" if predicted is None else "drift"
    return Outcome(predicted == item.answer, error, predicted, wrong, misplaced)


def _known(key: str) -> bool:
    words = key.split()
    if len(words) == 2:
        return words[0] in COLOURS and words[1] in SHAPES
    return key in COLOURS or key in SHAPES or re.fullmatch(r"r[1-3]c[1-3]", key) is not None


def write_split(split: str, folder: str | Path, n: int | None = None) -> Path:
    """Images as PNG and one JSONL line per item (id, image, question, answer, target, family, scene)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.jsonl"
    with open(path, "w") as f:
        for item in items(split, n):
            image = f"images/{item.id}.png"
            item.scene.render().save(folder / image)
            row = {**item.to_json(), "image": image, "prompt": item.question, "target": item.target}
            f.write(json.dumps(row) + "\n")
    return path
