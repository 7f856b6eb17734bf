"""Rule-based answer extraction."""

import pytest

from functional_heads.evaluation import answers


@pytest.mark.parametrize("output, expected", [
    ("<think> long reasoning </think> <answer> 12 </answer>", "12"),
    ("so the total is \\boxed{\\frac{1}{2}} overall", "\\frac{1}{2}"),
    ("First ... Therefore, the answer is 7.", "7"),
    ("<think> maybe A </think> C", "C"),
])
def test_final_answer(output, expected):
    assert answers.final_answer(output) == expected


@pytest.mark.parametrize("output, options, expected", [
    ("B", None, "B"),
    ("(C) because ...", None, "C"),
    ("<think> A or D? </think> The answer is D.", None, "D"),
    ("I choose option B", None, "B"),
    ("<answer> 3.5 cm </answer>", ["2 cm", "3.5 cm", "5 cm"], "B"),
    ("It is a cat", ["a dog", "a cat"], "B"),
    ("E", ["x", "y", "z", "w"], None),  # beyond the options
    ("no idea", ["x", "y"], None),
])
def test_choice_letter(output, options, expected):
    assert answers.choice_letter(output, options) == expected


@pytest.mark.parametrize("output, expected", [
    ("Yes, there is.", "yes"), ("<think> yes? no. </think> No", "no"), ("I cannot tell", None),
])
def test_yes_no(output, expected):
    assert answers.yes_no(output) == expected


def test_numbers():
    assert answers.number("the answer is 1,250.5 dollars") == 1250.5
    assert answers.number("\\boxed{-3}") == -3
    assert answers.number("none") is None
    assert answers.same_number(3.14159, 3.14, precision=2)
    assert not answers.same_number(3.149, 3.14, precision=2)
    assert answers.same_number(2.0, 2)
    assert not answers.same_number(None, 2)
    assert answers.same_text("\\text{Yes}.", "yes")
