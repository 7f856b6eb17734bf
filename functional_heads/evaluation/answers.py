"""Rule-based answer extraction from free-form (often chain-of-thought) model outputs.

Reasoning models think first and answer last, so every extractor looks at the *final* part of an output:
an `<answer>` tag, else a `\\boxed{}`, else "the answer is ...", else the text after `</think>`, else the
whole output. No LLM judge is needed for these rules.
"""

from __future__ import annotations

import math
import re

LETTERS = "ABCDEFGHIJ"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def final_answer(output: str) -> str:
    """The part of `output` that states the answer."""
    if tagged := re.findall(r"<answer>(.*?)(?:</answer>|$)", output, re.S):
        return tagged[-1].strip()
    if boxed := boxed_contents(output):
        return boxed[-1].strip()
    if said := re.findall(r"answer is[:\s]*(.+?)(?:\n|$)", output, re.I):
        return said[-1].strip().rstrip(".")
    return output.split("</think>")[-1].strip()


def boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}`, braces balanced."""
    found, start = [], 0
    while (at := text.find("\\boxed{", start)) != -1:
        depth, i = 1, at + len("\\boxed{")
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        found.append(text[at + len("\\boxed{"):i - 1])
        start = i
    return found


def choice_letter(output: str, options: list[str] | None = None) -> str | None:
    """The chosen option letter: a lone letter ("B", "(B)", "B." "B) ..."), else the option whose text the
    answer states; None when neither is found. Letters beyond the options are ignored."""
    answer = final_answer(output)
    allowed = LETTERS[:len(options)] if options else LETTERS[:4]
    if m := re.match(rf"^\(?([{allowed}])(?:[\).:,\s]|$)", answer.strip()):
        return m[1]
    if m := re.search(rf"(?:option|choice|answer)\s*(?:is)?\s*:?\s*\(?([{allowed}])\b", answer, re.I):
        return m[1].upper()
    if options:
        lowered = _normalise_text(answer)
        matches = [LETTERS[i] for i, option in enumerate(options) if _normalise_text(option) == lowered]
        if not matches:
            matches = [LETTERS[i] for i, option in enumerate(options)
                       if _normalise_text(option) and _normalise_text(option) in lowered]
        if len(matches) == 1:
            return matches[0]
    return None


def yes_no(output: str) -> str | None:
    """'yes' or 'no' from the answer's first yes/no word; None if it has neither."""
    words = re.findall(r"\b(yes|no)\b", final_answer(output).lower())
    return words[0] if words else None


def number(output: str) -> float | None:
    """The last number in the answer (thousands separators dropped), or None."""
    numbers = _NUMBER.findall(final_answer(output))
    if not numbers:
        return None
    try:
        return float(numbers[-1].replace(",", ""))
    except ValueError:
        return None


def same_number(a: float | None, b: float | None, precision: int | None = None) -> bool:
    """Equal after rounding both to `precision` decimals (exact to 1e-6 relative when None)."""
    if a is None or b is None:
        return False
    if precision is not None:
        return round(a, precision) == round(b, precision)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _normalise_text(text: str) -> str:
    text = re.sub(r"\\text\{(.*?)\}", r"\1", text)
    return re.sub(r"[\s$.]+", " ", text).strip().lower()


def same_text(a: str, b: str) -> bool:
    """Equal up to case, spaces, dollar signs, `\\text{}` and a trailing full stop."""
    return _normalise_text(a) == _normalise_text(b)
