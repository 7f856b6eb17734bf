"""MathVista testmini (1000 items): multiple choice and free-form math over images.

Prompt: the dataset's own `query` field (question, hint and choices, as the official evaluation builds
it). Scoring by rules only (the official path's LLM extraction step is not used): the chosen option's
text for multiple choice; numbers compared after rounding to the item's `precision` (0 decimals for
integer answers); lists element-wise; text up to case and spacing. Categories: `metadata.task`.
"""

from __future__ import annotations

import json
import re

from .. import answers
from .base import Benchmark, Example, Scored, first_present


class MathVista(Benchmark):
    name = "mathvista"
    default_split = "testmini"

    def example(self, row, index):
        metadata = row.get("metadata") or {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        choices = row.get("choices") or None
        prompt = row.get("query") or row["question"] + (
            "\nChoices:\n" + "\n".join(f"({answers.LETTERS[i]}) {c}" for i, c in enumerate(choices)) if choices else "")
        info = {"question_type": row["question_type"], "answer_type": row["answer_type"],
                "precision": row.get("precision"), "choices": choices}
        return Example(str(row["pid"]), first_present(row, "decoded_image", "image"), prompt, str(row["answer"]),
                       metadata.get("task", ""), info)

    def score(self, example, output):
        info, gold = example.info, example.gold
        if info["question_type"] == "multi_choice" and info["choices"]:
            letter = answers.choice_letter(output, info["choices"])
            extracted = info["choices"][answers.LETTERS.index(letter)] if letter else answers.final_answer(output)
            return Scored(extracted, float(answers.same_text(extracted, gold)))
        if info["answer_type"] in ("integer", "float"):
            precision = 0 if info["answer_type"] == "integer" else int(info["precision"] or 0)
            value = answers.number(output)
            return Scored(value, float(answers.same_number(value, float(gold), precision)))
        if info["answer_type"] == "list":
            predicted = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", answers.final_answer(output) or "")]
            expected = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", gold)]
            return Scored(predicted, float(predicted == expected))
        extracted = answers.final_answer(output)
        return Scored(extracted, float(answers.same_text(extracted, gold)))
