"""MathVision (test 3040, testmini 304): competition math with images.

Prompt: the question (its `<image1>` placeholders removed), the options lettered A-E when there are
any, then an instruction to box the final answer. Scoring by rules: the answer is read from `\\boxed{}`
or "the answer is"; a letter for items with options, otherwise numbers compared numerically and text up
to case and spacing. Categories: `subject`.
"""

from __future__ import annotations

import re

from .. import answers
from .base import Benchmark, Example, Scored, first_present


class MathVision(Benchmark):
    name = "mathvision"
    default_split = "test"
    instruction = "Please reason step by step, and put your final answer within \\boxed{}."

    def example(self, row, index):
        options = list(row.get("options") or [])
        question = re.sub(r"<image\d*>", "", row["question"]).strip()
        if options:
            question += "\nChoices: " + " ".join(f"({answers.LETTERS[i]}) {o}" for i, o in enumerate(options))
        return Example(str(row["id"]), first_present(row, "decoded_image", "image"), f"{question}\n{self.instruction}",
                       str(row["answer"]), str(row.get("subject", "")), {"options": options})

    def score(self, example, output):
        options, gold = example.info["options"], example.gold
        if options:
            letter = answers.choice_letter(output, options)
            return Scored(letter, float(letter == gold.strip().upper()))
        extracted = answers.final_answer(output)
        try:
            expected = float(gold)
        except ValueError:
            return Scored(extracted, float(answers.same_text(extracted, gold)))
        value = answers.number(output)
        return Scored(value, float(answers.same_number(value, expected)))
