"""MathVision (test 3040, testmini 304): competition math with images.

Follows the official equality (repository mathllm/MATH-V, `evaluation/utils.py`, `is_equal` and
`find_math_answer`): case and spaces ignored, the value after an `=` or `\\approx`, then both sides
evaluated as LaTeX (`\\frac`, `\\dfrac`, `\\sqrt`, `a/b`) and compared after rounding to 2 decimals,
tuples element by element; so `0.5` equals `\\frac{1}{2}` and `2\\sqrt{2}` equals 2.83. About 6% of the
free-form gold answers are not plain numbers. Our LaTeX evaluation is a small arithmetic parser in place
of latex2sympy (symbols other than pi are not evaluated: such answers are compared as text).

Prompt: the question (its `<image1>` placeholders removed), the options lettered A-E when there are
any, then an instruction to box the final answer. The answer is read from the final-answer region
(`\\boxed{}` or "the answer is"); a letter for items with options, the equality above otherwise.
Categories: `subject`.
"""

from __future__ import annotations

import re

from . import answers
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
        return Scored(extracted, float(math_equal(extracted, gold)))


def math_equal(answer: str | None, gold: str) -> bool:
    """The official equality: text up to case and spaces, else the values rounded to 2 decimals."""
    if answer is None:
        return False
    answer, gold = answer.lower().strip(), gold.lower().strip()
    if not answer.replace(" ", "") or not gold.replace(" ", ""):
        return False
    if answer == gold or answer.replace(" ", "") == gold.replace(" ", ""):
        return True
    answer = re.split(r"\\approx", answer.split("=")[-1])[-1]  # the value after an equality
    values = [_values(answer), _values(gold)]
    return None not in values and len(values[0]) == len(values[1]) and \
        all(round(a, 2) == round(b, 2) for a, b in zip(*values))


def _values(text: str) -> list[float] | None:
    """The value of an expression, or of each element of a tuple or list "(a, b)"; None if one is not a number."""
    text = text.strip()
    parts = text[1:-1].split(",") if len(text) > 1 and text[0] + text[-1] in ("()", "[]") and "," in text else [text]
    values = [answers.latex_value(part) for part in parts]
    return None if None in values else values
