"""SEED-Bench, image part (questions with four options; the video part is skipped).

Prompt: the question, options A-D on their own lines, and "Answer with the option's letter from the
given choices directly." Score: the letter. Categories: the nine image evaluation dimensions.
Official code: AILab-CVC/SEED-Bench (accuracy per dimension and overall); it ranks the four options by
the model's likelihood, where we read the letter the model writes (a generative reasoning model answers
in text), the way lmms-eval and VLMEvalKit run it.
"""

from __future__ import annotations

from . import answers
from .base import Benchmark, Example, Scored

DIMENSIONS = {1: "Scene Understanding", 2: "Instance Identity", 3: "Instance Attributes", 4: "Instance Location",
              5: "Instances Counting", 6: "Spatial Relation", 7: "Instance Interaction", 8: "Visual Reasoning",
              9: "Text Understanding"}


class SEEDBench(Benchmark):
    name = "seedbench"
    default_split = "test"
    instruction = "Answer with the option's letter from the given choices directly."

    def example(self, row, index):
        if str(row.get("data_type", "image")) != "image":
            return None
        options = [row[f"choice_{c}"] for c in "abcd"]
        lines = "\n".join(f"{answers.LETTERS[i]}. {o}" for i, o in enumerate(options))
        dimension = int(row["question_type_id"])
        return Example(str(row["question_id"]), row["image"], f"{row['question']}\n{lines}\n{self.instruction}",
                       str(row["answer"]).strip().upper(), DIMENSIONS.get(dimension, str(dimension)), {"options": options})

    def score(self, example, output):
        letter = answers.choice_letter(output, example.info["options"])
        return Scored(letter, float(letter == example.gold))
