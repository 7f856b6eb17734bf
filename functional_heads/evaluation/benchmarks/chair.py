"""CHAIR: object hallucination in free captions of COCO images.

Data: COCO images (a folder, or JSONL rows with `image` and optionally `image_id`) and the user's COCO
instance annotations file (`--option annotations=instances_val2014.json`), which gives each image's true
objects. Prompt: "Please describe this image in detail." Objects mentioned in a caption are found
with this module's own table of the 80 COCO categories and common synonyms and plurals (no NLTK), so
values are close to, not identical with, the original CHAIR script's. Metrics: CHAIR_s (share of
captions naming an object that is not in the image), CHAIR_i (hallucinated objects / objects named,
per caption, unique), recall (true objects named / true objects). An item's score is 1 when its
caption names no hallucinated object, so paired tests compare CHAIR_s.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path

from .base import Benchmark, Example, Scored, _mean

SYNONYMS = {
    "person": "person people man men woman women boy girl child children kid player skier surfer skateboarder "
              "rider lady guy baby",
    "bicycle": "bicycle bike", "car": "car taxi sedan", "motorcycle": "motorcycle motorbike scooter",
    "airplane": "airplane plane jet aircraft airliner", "bus": "bus", "train": "train locomotive",
    "truck": "truck pickup", "boat": "boat ship sailboat kayak canoe", "traffic light": "traffic_light stoplight",
    "fire hydrant": "fire_hydrant hydrant", "stop sign": "stop_sign", "parking meter": "parking_meter",
    "bench": "bench", "bird": "bird pigeon seagull duck parrot", "cat": "cat kitten", "dog": "dog puppy",
    "horse": "horse pony", "sheep": "sheep lamb", "cow": "cow cattle bull calf", "elephant": "elephant",
    "bear": "bear", "zebra": "zebra", "giraffe": "giraffe", "backpack": "backpack", "umbrella": "umbrella",
    "handbag": "handbag purse", "tie": "tie necktie", "suitcase": "suitcase luggage", "frisbee": "frisbee",
    "skis": "ski skis", "snowboard": "snowboard", "sports ball": "ball football basketball soccer_ball",
    "kite": "kite", "baseball bat": "baseball_bat bat", "baseball glove": "baseball_glove glove mitt",
    "skateboard": "skateboard", "surfboard": "surfboard", "tennis racket": "tennis_racket racket racquet",
    "bottle": "bottle", "wine glass": "wine_glass", "cup": "cup mug", "fork": "fork", "knife": "knife",
    "spoon": "spoon", "bowl": "bowl", "banana": "banana", "apple": "apple", "sandwich": "sandwich burger",
    "orange": "orange", "broccoli": "broccoli", "carrot": "carrot", "hot dog": "hot_dog", "pizza": "pizza",
    "donut": "donut doughnut", "cake": "cake", "chair": "chair", "couch": "couch sofa",
    "potted plant": "potted_plant houseplant", "bed": "bed", "dining table": "dining_table table",
    "toilet": "toilet", "tv": "tv television", "laptop": "laptop", "mouse": "mouse", "remote": "remote",
    "keyboard": "keyboard", "cell phone": "cell_phone cellphone phone smartphone", "microwave": "microwave",
    "oven": "oven", "toaster": "toaster", "sink": "sink", "refrigerator": "refrigerator fridge", "book": "book",
    "clock": "clock", "vase": "vase", "scissors": "scissors", "teddy bear": "teddy_bear teddy",
    "hair drier": "hair_drier hair_dryer", "toothbrush": "toothbrush",
}
IRREGULAR = {"knife": "knives", "mouse": "mice", "person": "persons"}


def _plural(word: str) -> str:
    if word in IRREGULAR:
        return IRREGULAR[word]
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _word_table() -> dict[str, str]:
    table = {}
    for category, words in SYNONYMS.items():
        for word in words.split():
            phrase = word.replace("_", " ")
            table[phrase] = category
            head, _, last = phrase.rpartition(" ")
            table[f"{head} {_plural(last)}".strip()] = category
    return table


WORDS = _word_table()
_PHRASE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, WORDS), key=len, reverse=True)) + r")\b")


def mentioned_objects(caption: str) -> set[str]:
    """COCO categories a caption names (longest phrase first: 'teddy bear' is not a bear)."""
    return {WORDS[m] for m in _PHRASE.findall(caption.lower())}


class CHAIR(Benchmark):
    name = "chair"
    default_split = "val"
    instruction = "Please describe this image in detail."
    option_names = ("annotations",)

    @cached_property
    def truth(self) -> dict[int, set[str]]:
        path = self.options.get("annotations")
        if not path or not Path(path).is_file():
            raise ValueError("CHAIR needs the COCO instance annotations of its images: pass "
                             "--option annotations=PATH/instances_val2014.json")
        coco = json.loads(Path(path).read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        truth = {image["id"]: set() for image in coco["images"]}
        for annotation in coco["annotations"]:
            truth.setdefault(annotation["image_id"], set()).add(names[annotation["category_id"]])
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
        named = mentioned_objects(output.split("</think>")[-1])
        hallucinated = sorted(named - set(example.gold))
        return Scored({"named": sorted(named), "hallucinated": hallucinated}, float(not hallucinated))

    def metrics(self, records):
        named = [len(r["extracted"]["named"]) for r in records]
        hallucinated = [len(r["extracted"]["hallucinated"]) for r in records]
        covered = sum(len(set(r["extracted"]["named"]) & set(r["gold"])) for r in records)
        accuracy = super().metrics(records)
        return {"CHAIR_s": _mean(float(h > 0) for h in hallucinated),
                "CHAIR_i": sum(hallucinated) / sum(named) if sum(named) else 0.0,
                "recall": covered / sum(len(r["gold"]) for r in records) if records else None,
                "accuracy": accuracy["accuracy"], "ci95": accuracy["ci95"],
                "note": "accuracy = share of captions without a hallucinated object (1 - CHAIR_s)"}
