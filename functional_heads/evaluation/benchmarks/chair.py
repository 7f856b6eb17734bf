"""CHAIR: object hallucination in free captions of COCO images.

Follows the official CHAIR code (repository LisaAnne/Hallucination, `utils/chair.py`, with its synonym
list `data/synonyms.txt`, kept here as `chair_synonyms.txt`): a caption's words are singularised, the
two-word objects merged ("teddy bear", "hot dog", ...; "baby X" / "adult X" of an animal is X, "passenger
jet" a jet, "bow tie" a tie, "toilet seat" a toilet), "seat" dropped beside "toilet", and every word of
the synonym list is a mention of its COCO category. The ground truth of an image is its instance
annotations (`--option annotations=instances_val2014.json`) plus the objects named in its COCO reference
captions (`--option captions=captions_val2014.json`; without it, annotations only, as some later papers
do). Metrics: CHAIR_s (captions with a hallucinated mention / captions), CHAIR_i (hallucinated mentions /
all mentions, every mention counted), recall (true objects named / true objects). Where we differ: a
small plural table instead of pattern.en's singularize, and for reasoning outputs only the final answer
region is the caption. An item's score is 1 when its caption has no hallucinated mention, so paired
tests compare CHAIR_s. Prompt: "Please describe this image in detail."
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path

from ...utils.errors import UserError
from . import answers
from .base import Benchmark, Example, Scored, mean_or_none


def _synonyms() -> dict[str, str]:
    """Word -> COCO category, read as the official code reads its file (', '-separated, first = category)."""
    table = {}
    for line in (Path(__file__).with_name("chair_synonyms.txt")).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            words = line.strip().split(", ")
            table.update({word: words[0] for word in words})
    return table


CATEGORY = _synonyms()
# two words read as one object, as the official code's double_word_dict
DOUBLE_WORDS = {w: w for w in (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate")}
DOUBLE_WORDS.update({f"{qualifier} {animal}": animal for qualifier in ("baby", "adult") for animal in (
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")})
DOUBLE_WORDS.update({"passenger jet": "jet", "passenger train": "train", "bow tie": "tie", "toilet seat": "toilet"})
IRREGULAR = {"man": "men", "woman": "women", "child": "children", "person": "persons", "goose": "geese",
             "mouse": "mice", "ox": "oxen", "foot": "feet", "knife": "knives", "calf": "calves"}


def _plurals(word: str) -> set[str]:
    forms = {word + "s"}
    if word in IRREGULAR:
        forms.add(IRREGULAR[word])
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(word + "es")
    if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        forms.add(word[:-1] + "ies")
    if word.endswith("fe"):
        forms.add(word[:-2] + "ves")
    return forms


# plural -> singular for every last word of the list's objects (what singularize does for these words)
SINGULAR = {plural: word for word in {w.split()[-1] for w in CATEGORY} | {w.split()[-1] for w in DOUBLE_WORDS}
            for plural in _plurals(word) if plural not in CATEGORY}


def caption_mentions(caption: str) -> list[str]:
    """The COCO category of every object mention in a caption, in order (repeats included)."""
    words = [SINGULAR.get(w, w) for w in re.findall(r"[a-z]+", caption.lower())]
    merged, i = [], 0
    while i < len(words):
        pair = " ".join(words[i:i + 2])
        if pair in DOUBLE_WORDS:
            merged.append(DOUBLE_WORDS[pair])
            i += 2
        else:
            merged.append(words[i])
            i += 1
    if "toilet" in merged and "seat" in merged:  # the seat of a toilet is not a chair
        merged = [w for w in merged if w != "seat"]
    return [CATEGORY[w] for w in merged if w in CATEGORY]


def mentioned_objects(caption: str) -> set[str]:
    """The COCO categories a caption names."""
    return set(caption_mentions(caption))


class CHAIR(Benchmark):
    name = "chair"
    default_split = "val"
    instruction = "Please describe this image in detail."
    option_names = ("annotations", "captions")

    @cached_property
    def truth(self) -> dict[int, set[str]]:
        path = self.options.get("annotations")
        if not path or not Path(path).is_file():
            raise UserError("CHAIR needs the COCO instance annotations of its images: pass "
                            "--option annotations=PATH/instances_val2014.json (and, as the official CHAIR, "
                            "--option captions=PATH/captions_val2014.json)")
        coco = json.loads(Path(path).read_text())
        names = {c["id"]: CATEGORY.get(c["name"], c["name"]) for c in coco["categories"]}
        truth = {image["id"]: set() for image in coco["images"]}
        for annotation in coco["annotations"]:
            truth.setdefault(annotation["image_id"], set()).add(names[annotation["category_id"]])
        if captions := self.options.get("captions"):
            if not Path(captions).is_file():
                raise UserError(f"--option captions={captions}: no such file (COCO's captions_val2014.json).")
            for annotation in json.loads(Path(captions).read_text())["annotations"]:
                if annotation["image_id"] in truth:
                    truth[annotation["image_id"]].update(caption_mentions(annotation["caption"]))
        return truth

    def examples(self, path, split=None):
        self.truth  # a missing annotations file stops the run here, not row by row
        yield from super().examples(path, split)

    def example(self, row, index):
        image_id = row.get("image_id")
        if image_id is None:
            image_id = int(re.findall(r"\d+", Path(str(row["image"])).stem)[-1])
        if int(image_id) not in self.truth:
            raise ValueError(f"image id {image_id} is not in the annotations file")
        return Example(str(image_id), row["image"], self.instruction, sorted(self.truth[int(image_id)]))

    def score(self, example, output):
        named = caption_mentions(answers.answer_region(output) or "")
        hallucinated = [name for name in named if name not in example.gold]
        return Scored({"named": named, "hallucinated": hallucinated}, float(not hallucinated))

    def metrics(self, records):
        named = [len(r["extracted"]["named"]) for r in records if r.get("extracted")]
        hallucinated = [len(r["extracted"]["hallucinated"]) for r in records if r.get("extracted")]
        covered = sum(len(set(r["extracted"]["named"]) & set(r["gold"])) for r in records if r.get("extracted"))
        accuracy = super().metrics(records)
        return {"CHAIR_s": mean_or_none(float(h > 0) for h in hallucinated),
                "CHAIR_i": sum(hallucinated) / sum(named) if sum(named) else 0.0,
                "recall": covered / sum(len(r["gold"]) for r in records) if records else None,
                "accuracy": accuracy["accuracy"], "ci95": accuracy["ci95"],
                **({"truncated_rate": accuracy["truncated_rate"]} if "truncated_rate" in accuracy else {}),
                "note": "accuracy = share of captions without a hallucinated object (1 - CHAIR_s)"}
