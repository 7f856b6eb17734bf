"""MathVista testmini (1000 items): multiple choice and free-form math over images.

Follows the official scoring (repository lupantech/MathVista, `evaluation/calculate_score.py`,
`normalize_extracted_answer` and `safe_equal`), with our rule-based extraction in place of its LLM
extraction step (the optional judge stands in for that step). An answer given in prose is read as that
extractor's examples read it (`evaluation/prompts/ext_ans.py`): from the sentence that states it, the
number it asserts ("The fraction ... is 0.6, which means six out of ten" gives 0.6; "So 2 items sold less
than 5 units" gives 2), not the last number written. Prompt: the dataset's own `query` field
(question, hint and choices, as the official evaluation builds it). Multiple choice: the chosen letter's
option, else the option nearest the extracted answer by edit distance, compared to the gold option;
integers as `str(int(float(x)))` (truncation, not rounding) and floats as `str(round(float(x),
precision))`, each compared to the gold answer's text; lists element-wise as numbers; text up to case and
spacing. Categories: `metadata.task`.
"""

from __future__ import annotations

import json
import re

from . import answers
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
            extracted = info["choices"][answers.LETTERS.index(letter)] if letter else \
                nearest_choice(answers.final_answer(output) or "", info["choices"])
            return Scored(extracted, float(extracted == gold))
        if info["answer_type"] in ("integer", "float"):
            value = answers.number(output)
            return Scored(value, float(normalized_number(value, info) == gold.strip()))
        if info["answer_type"] == "list":
            stated = answers.answer_sentence(answers.final_answer(output) or "")
            predicted = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", stated)]
            expected = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", gold)]
            return Scored(predicted, float(predicted == expected))
        extracted = answers.final_answer(output)
        return Scored(extracted, float(answers.same_text(extracted, gold)))


def normalized_number(value: float | None, info: dict) -> str | None:
    """The official normalisation: integers truncated (`int(float(x))`), floats rounded to the item's
    precision, both as text."""
    if value is None:
        return None
    if info["answer_type"] == "integer":
        return str(int(value))
    return str(round(value, int(info["precision"] or 0)))


def nearest_choice(text: str, choices: list[str]) -> str:
    """The choice with the smallest edit distance to `text` (the first of equals), as the official code."""
    distances = [edit_distance(text.strip(), choice) for choice in choices]
    return choices[distances.index(min(distances))]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, each 1."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]
