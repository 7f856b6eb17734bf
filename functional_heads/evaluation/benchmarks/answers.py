"""Rule-based answer extraction from free-form (often chain-of-thought) model outputs.

Reasoning models think first and answer last. The *answer region* of an output is what follows its last
`</think>`; an output that opened `<think>` and never closed it was cut off by the token limit and has no
final answer (`truncated`), however many "the answer is" its thinking holds. Without think tags the whole
output is the region. Inside the region: the last `<answer>` tag, else the last `\\boxed{}`, else the last
"answer is ...", else the region itself.
"""

from __future__ import annotations

import ast
import math
import operator
import re

LETTERS = "ABCDEFGHIJ"
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_MINUS = dict.fromkeys(map(ord, "\u2212\u2013\u2012\ufe63\uff0d"), "-")  # Unicode minus signs and dashes
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:)\s*[:\s]*(.+?)(?:\n|$)", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Words after which a sentence states its conclusion ("3 and 4, so 7 in all"): the clause after the last
# one holds the answer.
_CONCLUSION = re.compile(r"\b(?:so|therefore|thus|hence|which gives|giving)\b[,:]?", re.I)
# "is 0.6", "would be 12", "equals 3": the number a sentence asserts follows its first such verb.
_ASSERTS = re.compile(r"\b(?:is|are|was|were|be|equals?|equal to|gives?|get)\s+(?:about |approximately |exactly "
                      r"|only |just |roughly )?(?=[-.\d])", re.I)


def answer_region(output: str) -> str | None:
    """What follows the last `</think>` (the whole output without think tags); None for a chain of thought
    that was never closed."""
    if "</think>" in output:
        return output.rsplit("</think>", 1)[1]
    if "<think>" in output:
        return None
    return output


def is_truncated(output: str) -> bool:
    return answer_region(output) is None


def final_answer(output: str) -> str | None:
    """The part of the answer region that states the answer; None when the output has no final answer."""
    region = answer_region(output)
    if region is None:
        return None
    if tagged := re.findall(r"<answer>(.*?)(?:</answer>|$)", region, re.S):
        return tagged[-1].strip()
    if boxed := boxed_contents(region):
        return boxed[-1].strip()
    if said := _ANSWER_PHRASE.findall(_unbold(region)):
        return said[-1].strip().rstrip(".")
    return region.strip()


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
    """The chosen option letter: a lone letter, any case ("B", "b", "(B)", "**B**", "B." "B) ..."), a letter
    the answer phrase names ("**Answer:** B", "the correct answer is **B**"), else the one option whose
    text the answer states (as a whole word or number: "8" is not in "18"); None when none is found.
    A capital starting a sentence ("A quick angle chase ...") is not a choice. Letters beyond the options
    are ignored."""
    answer = final_answer(output)
    if answer is None:
        return None
    answer = _unbold(answer).strip()
    allowed = LETTERS[:len(options)] if options else LETTERS[:4]
    if m := re.fullmatch(rf"\(?([{allowed}{allowed.lower()}])\)?[.:]?", answer):
        return m[1].upper()
    if m := re.match(rf"^\(?([{allowed}])(?:\)|[.:,]|\s*[-)]\s|$)", answer):
        return m[1]
    named = r"(?i:option|choice|answer)\s*(?i:is)?\s*:?\s*\(?"
    if m := re.search(rf"{named}([{allowed}])\)?(?:[\s.,)]|$)", answer) or \
            re.search(rf"{named}([{allowed.lower()}])\)?(?:[.,)]|$)", answer):  # "answer is a cat" names no option
        return m[1].upper()
    if options:
        lowered = _normalise_text(answer)
        matches = [LETTERS[i] for i, option in enumerate(options) if _normalise_text(option) == lowered]
        if not matches:
            matches = [LETTERS[i] for i, option in enumerate(options)
                       if _normalise_text(option) and _contains_whole(lowered, _normalise_text(option))]
        if len(matches) == 1:
            return matches[0]
    return None


def yes_no(output: str) -> str | None:
    """'yes' or 'no' from the answer's first yes/no word; None if it has neither."""
    answer = final_answer(output)
    words = re.findall(r"\b(yes|no)\b", answer.lower()) if answer is not None else []
    return words[0] if words else None


def number(output: str) -> float | None:
    """The number the answer states, or None. A boxed or tagged answer is read as LaTeX (`\\frac`, `\\sqrt`,
    `\\text{}` units dropped); "the answer is 5 because ... 8" is 5 (the number the phrase points at); an
    answer in prose gives the number its answer sentence states (`stated_number`). Thousands separators
    and Unicode minus signs are read."""
    region = answer_region(output)
    if region is None:
        return None
    region = region.translate(_MINUS)
    if tagged := re.findall(r"<answer>(.*?)(?:</answer>|$)", region, re.S):
        return latex_number(tagged[-1])
    if boxed := boxed_contents(region):
        return latex_number(boxed[-1])
    if said := _ANSWER_PHRASE.findall(_unbold(region)):
        return _first_number(latex_number_text(said[-1]))
    return stated_number(answer_sentence(latex_number_text(_unbold(region))))


def answer_sentence(text: str) -> str:
    """The last sentence of `text` that holds a number (`text` itself when none does): an answer stated
    in prose ends the response."""
    sentences = [s for s in _SENTENCE_END.split(text) if _NUMBER.search(s)]
    return sentences[-1] if sentences else text


def stated_number(sentence: str) -> float | None:
    """The number a sentence gives as its answer, as MathVista's official (LLM) extractor reads it: after
    its last conclusion word ("so", "therefore") if a number follows; there, the value after the last
    "=", else the number after the first asserting verb ("is 0.6, which means six out of ten" is 0.6),
    else the first number ("So 2 items sold less than 5 units" is 2)."""
    clauses = [c for c in _CONCLUSION.split(sentence) if _NUMBER.search(c)]
    clause = clauses[-1] if clauses else sentence
    if "=" in clause and (value := _first_number(clause.rsplit("=", 1)[1])) is not None:
        return value
    if asserted := _ASSERTS.search(clause):
        return _first_number(clause[asserted.end():])
    return _first_number(clause)


def latex_number(text: str) -> float | None:
    """The value of a short LaTeX answer ("\\frac{3}{2}", "2\\sqrt{2}", "0 \\text{ cm}^2", "-1,250", "7/3");
    for an expression it cannot evaluate, the first number in it."""
    value = latex_value(text)
    return value if value is not None else _first_number(latex_number_text(text))


def latex_value(text: str) -> float | None:
    """The value of a LaTeX expression made of numbers, fractions, roots and arithmetic; None otherwise."""
    return _evaluate(latex_number_text(text))


def latex_number_text(text: str) -> str:
    """LaTeX rewritten as plain arithmetic: units and formatting dropped, fractions and roots spelled out."""
    text = text.translate(_MINUS)
    text = re.sub(r"\\(?:text|mathrm|textbf|mbox|operatorname)\s*\{[^{}]*\}(?:\s*\^\s*(?:\{[^{}]*\}|\d))?", " ", text)
    text = re.sub(r"\^\s*\{?\\circ\}?|\\circ|°|\\%|%|\\\$|\$|\\[,;:! ]|\\left|\\right|\\displaystyle", " ", text)
    text = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"sqrt(\1)", text)  # roots first: a fraction may hold one
    text = re.sub(r"\\sqrt\s*(\d+(?:\.\d+)?)", r"sqrt(\1)", text)
    text = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"((\1)/(\2))", text)
    text = re.sub(r"\\[dt]?frac\s*(\d)\s*(\d)", r"((\1)/(\2))", text)
    text = text.replace("\\cdot", "*").replace("\\times", "*").replace("\\pi", "pi").replace("{", "(").replace("}", ")")
    text = re.sub(r"(?<=\d),(?=\d{3}(?:\D|$))", "", text)  # thousands separators
    return re.sub(r"(?<=[\d)])\s*(?=sqrt|pi|\()", "*", text)  # 2sqrt(2) -> 2*sqrt(2)


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def _evaluate(expression: str) -> float | None:
    """A plain arithmetic expression's value (numbers, + - * / ^, sqrt, pi); None for anything else."""
    expression = expression.strip().rstrip(".").replace("^", "**")
    if not expression or len(expression) > 200:
        return None
    try:
        return float(_value(ast.parse(expression, mode="eval").body))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, KeyError):
        return None


def _value(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp):
        return _OPERATORS[type(node.op)](_value(node.left), _value(node.right))
    if isinstance(node, ast.UnaryOp):
        return _OPERATORS[type(node.op)](_value(node.operand))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sqrt" and len(node.args) == 1:
        return math.sqrt(_value(node.args[0]))
    if isinstance(node, ast.Name) and node.id == "pi":
        return math.pi
    raise ValueError("not plain arithmetic")


def _first_number(text: str) -> float | None:
    numbers = _NUMBER.findall(text)
    return float(numbers[0].replace(",", "")) if numbers else None


def same_number(a: float | None, b: float | None, precision: int | None = None) -> bool:
    """Equal after rounding both to `precision` decimals (exact to 1e-6 relative when None)."""
    if a is None or b is None:
        return False
    if precision is not None:
        return round(a, precision) == round(b, precision)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _unbold(text: str) -> str:
    return re.sub(r"\*\*|__", "", text)


def _contains_whole(text: str, part: str) -> bool:
    """`part` occurs in `text` as a whole: not inside a longer word or number."""
    return re.search(rf"(?<![\w.]){re.escape(part)}(?![\w]|\.\d)", text) is not None


def _normalise_text(text: str) -> str:
    text = re.sub(r"\\text\{(.*?)\}", r"\1", text)
    return re.sub(r"[\s$.]+", " ", text).strip().lower()


def same_text(a: str | None, b: str) -> bool:
    """Equal up to case, spaces, dollar signs, `\\text{}` and a trailing full stop (never for no answer)."""
    return a is not None and _normalise_text(a) == _normalise_text(b)
