"""Rule-based answer extraction."""

import pytest

from functional_heads.evaluation.benchmarks import answers


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


# ---------------------------------------------------------------- the final-answer region of reasoning outputs

@pytest.mark.parametrize("output, expected", [
    # an "answer is" or \boxed{} inside the thinking is not the answer: what follows </think> is
    ("<think> so the answer is 3, or \\boxed{4} </think> The answer is 5.", "5"),
    ("<think> \\boxed{2} </think> <answer> 7 </answer>", "7"),
    ("<think> first </think> <think> again </think> 9", "9"),
    # a chain the model never closed (the token limit was hit) has no final answer
    ("<think> the answer is 3 ... and so \\boxed{4", None),
    ("<think> long reasoning, cut", None),
])
def test_the_answer_is_read_after_the_thinking_only(output, expected):
    assert answers.final_answer(output) == expected
    assert answers.is_truncated(output) == (expected is None)


def test_truncated_rows_are_unanswered_and_counted():
    from functional_heads.evaluation.benchmarks import Example, get_benchmark

    pope = get_benchmark("pope")
    example = Example("1", None, "Is there a dog?", "yes", "random")
    scored = pope.score_output(example, "<think> yes, there is a dog, the answer is yes")
    assert scored.score == 0.0 and scored.failure == "truncated" and scored.extracted is None
    records = [{"score": 0.0, "failure": "truncated", "category": "random"},
               {"score": 1.0, "failure": None, "category": "random"}]
    assert get_benchmark("mmstar").metrics(records)["truncated_rate"] == 0.5
    assert "truncated_rate" not in get_benchmark("shapes").metrics(records)  # shapes labels its own failures


@pytest.mark.parametrize("output, expected", [
    ("\\boxed{0 \\text{ cm}^2}", 0.0),  # a unit's exponent is not the answer
    ("\\boxed{\\frac{3}{2}}", 1.5),
    ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", 3 ** 0.5 / 2),
    ("\\boxed{2\\sqrt{2}}", 2 * 2 ** 0.5),
    ("\\boxed{7/3}", 7 / 3),
    ("The answer is 5 because we subtract 3 from 8.", 5.0),  # the number the phrase points at
    ("<think> the answer is 2 </think> It is \u22124.", -4.0),  # Unicode minus; thinking ignored
    ("the answer is 1,250.5 dollars", 1250.5),
    ("<answer> 12 </answer>", 12.0),
    ("<think> 3 + 4 = 7 and more", None),
    # prose: the number the answer sentence states, as MathVista's official extractor reads it
    ("Counting the bars below five: So 2 items sold less than 5 units.", 2.0),
    ("The fraction of females facing the camera is 0.6, which means 6 out of 10 face it.", 0.6),
    ("Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.", 1.45),
    ("There are 3 red and 4 blue cubes, so 3 + 4 = 7.", 7.0),
    ("Let x = 3, so the area would be 9 square units.", 9.0),
    ("I count 4 large ones.\nTherefore, there are 6 spheres left of the 10 we started with.", 6.0),
    ("The total is 12, which is 4 more than 8.", 12.0),
])
def test_numbers_from_latex_and_answer_phrases(output, expected):
    got = answers.number(output)
    assert (got is None) if expected is None else got == pytest.approx(expected)


@pytest.mark.parametrize("output, options, expected", [
    ("**Answer:** B", None, "B"),
    ("<think> maybe A </think> The correct answer is **B**.", None, "B"),
    ("b", None, "B"),
    ("\\boxed{a}", None, "A"),
    ("<think> hmm </think> (d)", None, "D"),
    ("A quick angle chase shows both angles are equal.", None, None),  # an article, not option A
    ("The answer is a triangle", None, None),
    ("<answer> 18 </answer>", ["8", "9", "10"], None),  # option "8" is not inside "18"
    ("<answer> 18 </answer>", ["8", "18", "28"], "B"),
    ("It is 8 cm long", ["8 cm", "18 cm"], "A"),
])
def test_option_letters(output, options, expected):
    assert answers.choice_letter(output, options) == expected
