"""Every benchmark's loader and scorer, on small fixture files in the dataset's real schema (our own rows,
generated images), against hand-computed metric values."""

import importlib.util
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from functional_heads.evaluation.benchmarks import BENCHMARKS, Example, Unusable, get_benchmark
from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.evaluation.benchmarks.chair import mentioned_objects
from functional_heads.testbed.bundled import bundled_model_path
from functional_heads.utils.errors import UnusableImage, UserError


def png(colour=(200, 30, 30), size=(24, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def image_cell(name="x.png"):
    return {"bytes": png(), "path": name}


def write_parquet(rows, path):
    pa = pytest.importorskip("pyarrow", reason="reading parquet needs the eval extra (pyarrow)")
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def scored_records(bench, examples, outputs):
    """Records as a run writes them, for the benchmark's metrics."""
    records = []
    for example, output in zip(examples, outputs):
        s = bench.score_output(example, output)
        records.append({"id": example.id, "gold": example.gold, "prediction": output, "extracted": s.extracted,
                        "score": s.score, "category": example.category, "info": example.info, "failure": s.failure})
    return records


def test_every_benchmark_is_registered():
    assert set(BENCHMARKS) == {"mathvista", "mathvision", "hallusionbench", "mmstar", "seedbench", "pope", "chair",
                               "shapes"}
    with pytest.raises(ValueError, match="Unknown benchmark"):
        get_benchmark("mmlu")


def test_mathvista_parquet(tmp_path):
    meta = {"task": "figure question answering", "category": "math-targeted-vqa"}
    rows = [
        dict(pid="1", question="How many bars?", image="images/1.jpg", decoded_image=image_cell(), choices=["3", "4", "5"],
             precision=None, answer="4", question_type="multi_choice", answer_type="text", metadata=meta,
             query="Hint: Please answer the question and provide the correct option letter.\nQuestion: How many bars?"),
        dict(pid="2", question="Sum?", image="images/2.jpg", decoded_image=image_cell(), choices=None, precision=None,
             answer="12", question_type="free_form", answer_type="integer", metadata={**meta, "task": "math word problem"},
             query="Hint: integer answer.\nQuestion: Sum?"),
        dict(pid="3", question="Ratio?", image="images/3.jpg", decoded_image=image_cell(), choices=None, precision=2.0,
             answer="1.25", question_type="free_form", answer_type="float", metadata={**meta, "task": "math word problem"},
             query="Hint: two decimals.\nQuestion: Ratio?"),
        dict(pid="4", question="Roots?", image="images/4.jpg", decoded_image=image_cell(), choices=None, precision=None,
             answer="[1, 2]", question_type="free_form", answer_type="list", metadata=meta, query="Question: Roots?"),
    ]
    path = write_parquet(rows, tmp_path / "data" / "testmini-00000-of-00001.parquet")
    write_parquet(rows[:1], tmp_path / "data" / "test-00000-of-00001.parquet")  # the other split: not read
    bench = get_benchmark("mathvista")
    assert [e.id for e in bench.examples(tmp_path, split="test")] == ["1"]  # "test" is not "testmini"
    examples = list(bench.examples(tmp_path))
    assert [e.id for e in examples] == ["1", "2", "3", "4"]
    assert examples[0].prompt == rows[0]["query"] and examples[0].load_image().size == (24, 24)
    outputs = ["<think>count</think> (B) 4", "The answer is 12.", "\\boxed{1.249}", "1 and 3"]
    records = scored_records(bench, examples, outputs)
    assert [r["score"] for r in records] == [1.0, 1.0, 1.0, 0.0]  # 1.249 rounds to 1.25 at precision 2
    assert records[0]["extracted"] == "4"
    metrics = bench.metrics(records)
    assert metrics["accuracy"] == 0.75
    assert metrics["categories"] == {"figure question answering": 0.5, "math word problem": 1.0}
    assert len(list(bench.examples(path))) == 4  # a single file works too


@pytest.mark.parametrize("output, info, gold, right", [
    ("\\boxed{3.9}", {"answer_type": "integer"}, "3", True),  # int(float(x)) truncates, as the official code
    ("\\boxed{4}", {"answer_type": "integer"}, "3", False),
    ("\\boxed{1.254}", {"answer_type": "float", "precision": 2}, "1.25", True),
    ("\\boxed{1.256}", {"answer_type": "float", "precision": 2}, "1.25", False),
    ("\\boxed{\\frac{5}{4}}", {"answer_type": "float", "precision": 2}, "1.25", True),
    ("<think> it is 7 </think> The answer is 2.", {"answer_type": "integer"}, "2", True),
    ("<think> it is 2, cut off", {"answer_type": "integer"}, "2", False),
    ("So 2 items sold less than 5 units.", {"answer_type": "integer"}, "2", True),  # the answer sentence's number
    ("<think>from 1990 on</think> It peaked between 2007 and 2008.", {"answer_type": "list"}, "[2007, 2008]", True),
    ("The line graph saw its maximum peak between 2007 and 2008.", {"answer_type": "list"}, "[2007, 2008]", True),
])
def test_mathvista_numbers_as_the_official_code_normalises_them(output, info, gold, right):
    bench = get_benchmark("mathvista")
    example = Example("1", None, "q", gold, "", {"question_type": "free_form", "choices": None, "precision": None,
                                                 **info})
    assert bench.score_output(example, output).score == float(right)


def test_mathvista_multiple_choice_falls_back_to_the_nearest_option():
    bench = get_benchmark("mathvista")
    choices = ["triangle", "square", "circle"]
    example = Example("1", None, "q", "circle", "", {"question_type": "multi_choice", "answer_type": "text",
                                                     "precision": None, "choices": choices})
    assert bench.score_output(example, "<think>...</think> circel").extracted == "circle"
    assert bench.score_output(example, "The answer is (C).").score == 1.0
    assert bench.score_output(example, "squares").extracted == "square"


@pytest.mark.parametrize("output, gold, right", [
    ("\\boxed{0.5}", "\\frac{1}{2}", True),  # LaTeX evaluated on both sides
    ("\\boxed{\\dfrac{1}{2}}", "0.5", True),
    ("\\boxed{7/3}", "2.33", True),  # rounded to 2 decimals
    ("\\boxed{2\\sqrt{2}}", "2.83", True),
    ("\\boxed{x = 12}", "12", True),  # the value after an equality
    ("\\boxed{2.836}", "2.83", False),
    ("\\boxed{(1, 2)}", "(1,2)", True),
    ("\\boxed{(1, 3)}", "(1,2)", False),
    ("\\boxed{Yellow}", "yellow", True),
    ("<think> \\boxed{5} and then the chain was cut", "5", False),
])
def test_mathvision_equality_as_the_official_code(output, gold, right):
    bench = get_benchmark("mathvision")
    example = Example("1", None, "q", gold, "", {"options": []})
    assert bench.score_output(example, output).score == float(right)


def test_mathvision_parquet(tmp_path):
    rows = [dict(id="1", question="<image1>Which shape is next?", options=["A1", "B1", "C1", "D1", "E1"],
                 image="images/1.jpg", decoded_image=image_cell(), answer="C", solution="", level=2,
                 subject="logic"),
            dict(id="2", question="<image1>How many dots?", options=[], image="images/2.jpg",
                 decoded_image=image_cell(), answer="7", solution="", level=1, subject="counting"),
            dict(id="3", question="<image1>Area?", options=[], image="images/3.jpg",
                 decoded_image=image_cell(), answer="7", solution="", level=1, subject="counting")]
    write_parquet(rows, tmp_path / "data" / "test-00000-of-00001.parquet")
    bench = get_benchmark("mathvision")
    examples = list(bench.examples(tmp_path))
    assert "<image1>" not in examples[0].prompt and "(C) C1" in examples[0].prompt
    assert examples[0].prompt.endswith("\\boxed{}.")
    records = scored_records(bench, examples, ["so \\boxed{C}", "\\boxed{7.0}", "the answer is 8"])
    assert [r["score"] for r in records] == [1.0, 1.0, 0.0]
    assert bench.metrics(records)["categories"] == {"counting": 0.5, "logic": 1.0}


def test_hallusionbench_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets", reason="save_to_disk folders need the eval extra (datasets)")
    keys = [("VD", "illusion", "0", "0", "0", "1"), ("VD", "illusion", "0", "1", "0", "0"),
            ("VD", "illusion", "0", "0", "1", "1"), ("VS", "chart", "1", "0", "0", "1"),
            ("VS", "chart", "1", "1", "0", "0")]
    rows = [dict(category=c, subcategory=s, visual_input="1", set_id=st, figure_id=f, sample_note="", question_id=q,
                 question=f"Is claim {i} true?", gt_answer_details="", gt_answer=g, filename=f"{i}.png",
                 image=Image.new("RGB", (16, 16))) for i, (c, s, st, f, q, g) in enumerate(keys)]
    write_parquet([{**r, "image": image_cell()} for r in rows], tmp_path / "pq" / "data" / "image-00000-of-00001.parquet")
    text_only = dict(rows[3], question_id="1", visual_input="0", question="Is claim 5 true?", image=None, filename="")
    write_parquet([text_only], tmp_path / "pq" / "data" / "non_image-00000-of-00001.parquet")
    both = list(get_benchmark("hallusionbench").examples(tmp_path / "pq"))  # the leaderboard: both splits
    assert len(both) == 6 and both[-1].image is None and both[-1].load_image() is None
    assert len({e.id for e in both}) == 6  # the official item key is unique across the two
    assert len(list(get_benchmark("hallusionbench").examples(tmp_path / "pq", split="image"))) == 5
    data = datasets.DatasetDict({"image": datasets.Dataset.from_list(rows)})
    data.save_to_disk(str(tmp_path / "hb"))
    bench = get_benchmark("hallusionbench")
    examples = list(bench.examples(tmp_path / "hb"))
    assert [e.gold for e in examples] == ["yes", "no", "yes", "yes", "no"]
    assert examples[0].prompt == "Is claim 0 true? Answer yes or no."
    records = scored_records(bench, examples, ["Yes.", "yes", "yes", "No", "<think>hmm</think> no"])
    metrics = bench.metrics(records)
    # figures: VD_illusion_0_0 [right, right] -> 1, VD_illusion_0_1 [wrong] -> 0, VS_chart_1_1 [right] -> 1
    # (VS figure 0 left out); questions: VD_illusion_0_0 [right, wrong] -> 0, VD_illusion_0_1 [right] -> 1,
    # VS_chart_1_0 [wrong, right] -> 0
    assert metrics["aAcc"] == pytest.approx(3 / 5)
    assert metrics["fAcc"] == pytest.approx(2 / 3)
    assert metrics["qAcc"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="splits image"):
        list(bench.examples(tmp_path / "hb", split="test"))


def test_hallusionbench_unclear_is_right_only_without_a_figure():
    """The official `assign_correctness`: a judge's "unclear" counts as correct for a VS question asked
    without a figure (figure 0) and as wrong everywhere else, VD's figure 0 included; the official
    accuracies come per part too."""
    bench = get_benchmark("hallusionbench")

    def example(category, set_id, figure, question, gold):
        keys = dict(category=category, subcategory="s", set_id=set_id, figure_id=figure, question_id=question)
        return Example("_".join(keys.values()), None, "q", gold, category, keys)

    examples = [example("VS", "0", "0", "0", "yes"), example("VS", "0", "1", "0", "no"),
                example("VD", "1", "0", "0", "yes"), example("VD", "1", "1", "0", "no"),
                example("VS", "2", "0", "0", "no")]
    outputs = ["I cannot tell without the chart.", "It depends.", "Hard to say.", "no", "Yes"]
    records = scored_records(bench, examples, outputs)
    assert [r["score"] for r in records] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert [r["failure"] for r in records] == ["unclear", "unclear", "unclear", None, None]
    metrics = bench.metrics(records)
    assert metrics["aAcc"] == pytest.approx(2 / 5) and metrics["unclear_rate"] == pytest.approx(3 / 5)
    # figures (VS figure 0 left out): VS_s_0_1 [wrong], VD_s_1_0 [wrong], VD_s_1_1 [right]
    assert metrics["fAcc"] == pytest.approx(1 / 3)
    # question pairs: VS_s_0_0 [right, wrong], VD_s_1_0 [wrong, right], VS_s_2_0 [wrong]
    assert metrics["qAcc"] == 0.0
    assert metrics["parts"]["VS"] == pytest.approx({"aAcc": 1 / 3, "fAcc": 0.0, "qAcc": 0.0})
    assert metrics["parts"]["VD"] == pytest.approx({"aAcc": 1 / 2, "fAcc": 1 / 2, "qAcc": 0.0})


def test_mmstar_headline_is_plain_accuracy_with_lmms_evals_number_beside_it(tmp_path):
    rows = [dict(index=i, question="Which? Options: A: x, B: y, C: z, D: w", image=image_cell(), answer=a,
                 category=core, l2_category=l2, meta_info={"source": "x"})
            for i, (a, core, l2) in enumerate([("A", "coarse perception", "a"), ("B", "coarse perception", "a"),
                                               ("C", "math", "b")])]
    write_parquet(rows, tmp_path / "val.parquet")
    bench = get_benchmark("mmstar")
    examples = list(bench.examples(tmp_path / "val.parquet"))
    records = scored_records(bench, examples, ["A", "C", "(C)"])
    metrics = bench.metrics(records)
    assert metrics["accuracy"] == pytest.approx(2 / 3)  # over the items, as MMStar and VLMEvalKit report it
    assert metrics["categories"] == {"coarse perception": 0.5, "math": 1.0}  # the core categories
    assert metrics["l2_category_mean"] == pytest.approx((0.5 + 1.0) / 2)  # lmms-eval's headline, kept beside


def test_seedbench_image_part_only(tmp_path):
    rows = [dict(answer=a, choice_a="cat", choice_b="dog", choice_c="car", choice_d="tree", data_id=str(i),
                 data_type=t, question="What is shown?", question_id=str(i), question_type_id=q,
                 image=[image_cell()] if t == "image" else [])
            for i, (a, t, q) in enumerate([("A", "image", 1), ("B", "image", 5), ("C", "video", 10)])]
    write_parquet(rows, tmp_path / "test.parquet")
    bench = get_benchmark("seedbench")
    examples = list(bench.examples(tmp_path / "test.parquet"))
    assert [e.id for e in examples] == ["0", "1"]  # the video question is not part of the image benchmark
    assert "B. dog" in examples[0].prompt and examples[0].load_image().size == (24, 24)
    records = scored_records(bench, examples, ["A", "It is a dog"])
    assert [r["score"] for r in records] == [1.0, 1.0]
    assert set(bench.metrics(records)["categories"]) == {"Scene Understanding", "Instances Counting"}


def test_pope_jsonl_metrics_per_split(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "img" / "a.png")
    golds = [("random", "yes"), ("random", "yes"), ("random", "no"), ("random", "no"),
             ("adversarial", "yes"), ("adversarial", "no")]
    with open(tmp_path / "pope.jsonl", "w") as f:
        for i, (split, answer) in enumerate(golds):
            f.write(json.dumps({"id": str(i), "question_id": str(i), "question": "Is there a dog in the image?",
                                "answer": answer, "image_source": "x", "image": "img/a.png",
                                "category": split}) + "\n")
    bench = get_benchmark("pope")
    examples = list(bench.examples(tmp_path / "pope.jsonl"))
    assert examples[0].load_image().size == (16, 16)
    records = scored_records(bench, examples, ["Yes", "No", "yes", "no", "yes", "I cannot tell"])
    metrics = bench.metrics(records)
    assert metrics["random"] == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5,
                                 "unanswered": 0, "n": 4}
    assert metrics["adversarial"] == {"accuracy": 0.5, "precision": 1.0, "recall": 1.0, "f1": 1.0, "yes_ratio": 0.5,
                                      "unanswered": 1, "n": 2}
    assert metrics["overall"]["accuracy"] == pytest.approx(3 / 6)
    # the official rule reads the answer with neither word as "yes": right on that "yes" item
    assert metrics["official_rule"]["adversarial"]["accuracy"] == 0.5 and metrics["official_accuracy"] == 0.5
    assert metrics["official_rule"]["adversarial"]["unanswered"] == 0 and metrics["unanswered_rate"] == 1 / 6


@pytest.mark.parametrize("output, ours, official", [
    ("There is not a dog in the image.", "no", "no"),  # a negation is "no", as in the official script
    ("No, there isn't.", "no", "no"),
    ("Yes. There is no cat though.", "yes", "yes"),  # the first sentence decides
    ("<think> no dog? </think> Yes, a dog.", "yes", "yes"),  # the thinking is not the answer
    ("I cannot tell.", None, "yes"),  # "cannot" is not "not": unanswered for us, "yes" officially
    ("It is unclear", None, "yes"),  # neither word: unanswered for us, "yes" for the official rule
    ("NO", "no", "yes"),  # the official rule is case-sensitive for "no"
])
def test_pope_readings(output, ours, official):
    from functional_heads.evaluation.benchmarks.pope import official_reading, read_yes_no

    assert read_yes_no(output) == ours and official_reading(output) == official


def test_pope_copy_without_ids_keeps_the_splits_apart(tmp_path):
    rows = [{"question_id": "1", "question": "Is there a dog?", "answer": "yes", "image": "a.png", "category": split}
            for split in ("random", "popular", "adversarial")]
    (tmp_path / "pope.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ids = [e.id for e in get_benchmark("pope").examples(tmp_path / "pope.jsonl")]
    assert ids == ["random-1", "popular-1", "adversarial-1"]


def test_chair_folder_of_images(tmp_path):
    (tmp_path / "val2014").mkdir()
    for image_id in (42, 73):
        Image.new("RGB", (16, 16)).save(tmp_path / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
    coco = {"images": [{"id": 42}, {"id": 73}],
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}],
            "annotations": [{"image_id": 42, "category_id": 1}, {"image_id": 42, "category_id": 18},
                            {"image_id": 73, "category_id": 62}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="annotations"):
        list(get_benchmark("chair").examples(tmp_path / "val2014"))
    bench = get_benchmark("chair", annotations=str(tmp_path / "instances.json"))
    examples = list(bench.examples(tmp_path / "val2014"))
    assert [(e.id, e.gold) for e in examples] == [("42", ["dog", "person"]), ("73", ["chair"])]
    records = scored_records(bench, examples, ["A man walks his dog past a bench.", "An empty chair by the wall."])
    metrics = bench.metrics(records)
    assert metrics["CHAIR_s"] == 0.5 and metrics["CHAIR_i"] == pytest.approx(1 / 4) and metrics["recall"] == 1.0
    assert mentioned_objects("A teddy bear and two knives") == {"teddy bear", "knife"}
    with pytest.raises(ValueError, match="takes no option"):
        get_benchmark("chair", annotation="x")


def test_chair_counts_every_mention_and_reads_the_reference_captions(tmp_path):
    (tmp_path / "val2014").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    coco = {"images": [{"id": 42}], "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
            "annotations": [{"image_id": 42, "category_id": 1}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    (tmp_path / "captions.json").write_text(json.dumps({"annotations": [
        {"image_id": 42, "caption": "A chef with his puppy in a kitchen."}, {"image_id": 7, "caption": "A cat."}]}))
    bench = get_benchmark("chair", annotations=str(tmp_path / "instances.json"),
                          captions=str(tmp_path / "captions.json"))
    example, = bench.examples(tmp_path / "val2014")
    assert example.gold == ["dog", "person"]  # the dog is named only in a reference caption
    records = scored_records(bench, [example], ["A cook, a dog and a cat; another cat and a cupcake."])
    metrics = bench.metrics(records)
    assert records[0]["extracted"]["named"] == ["dog", "cat", "cat", "cake"]
    assert metrics["CHAIR_i"] == pytest.approx(3 / 4)  # every mention: the two cats count twice
    assert metrics["CHAIR_s"] == 1.0


@pytest.mark.parametrize("caption, objects", [
    ("A chef by the stove next to a van and a stool", ["person", "oven", "car", "chair"]),  # the official list
    ("A baby elephant and an adult giraffe", ["elephant", "giraffe"]),  # not a person
    ("The toilet seat is up", ["toilet"]),  # not a chair
    ("Two hot dogs and a teddy bear beside a bear", ["hot dog", "teddy bear", "bear"]),
    ("A passenger jet over three buses", ["airplane", "bus"]),
])
def test_chair_mentions_follow_the_official_rules(caption, objects):
    from functional_heads.evaluation.benchmarks.chair import caption_mentions

    assert caption_mentions(caption) == objects


def test_unusable_rows_are_reported_not_fatal(tmp_path):
    lines = [json.dumps({"id": "ok", "question": "Is there a dog?", "answer": "yes", "image": "missing.png"}),
             json.dumps({"id": "bad", "answer": "yes", "image": "missing.png"}),  # no question
             "{torn"]
    (tmp_path / "pope.jsonl").write_text("\n".join(lines) + "\n")
    examples = list(get_benchmark("pope").examples(tmp_path / "pope.jsonl"))
    assert isinstance(examples[0], Example) and [type(e) for e in examples[1:]] == [Unusable, Unusable]
    assert "question" in examples[1].reason and "not valid JSON" in examples[2].reason
    with pytest.raises(ValueError, match="does not exist"):
        examples[0].load_image()
    with pytest.raises(ValueError, match="does not exist"):
        list(get_benchmark("pope").examples(tmp_path / "nothing.jsonl"))


def pope_row(ident, question="Is there a dog?", image="a.png"):
    return {"id": ident, "question": question, "answer": "yes", "image": image, "category": "random"}


def test_duplicate_ids_are_an_error_naming_both_rows_in_every_reader(tmp_path):
    """Two rows with one id stored one answer over the other ('2 items', one answer lost)."""
    rows = [pope_row("7", "Is there a dog?"), pope_row("8"), pope_row("7", "Is there a cat?")]
    (tmp_path / "pope.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "pope.json").write_text(json.dumps(rows))
    write_parquet(rows, tmp_path / "pq" / "test.parquet")
    for data, first, second in [("pope.jsonl", "pope.jsonl:1", "pope.jsonl:3"),
                                ("pope.json", "pope.json item 1", "pope.json item 3"),
                                ("pq", "test.parquet row 1", "test.parquet row 3")]:
        with pytest.raises(UserError, match="item id '7'") as caught:
            list(get_benchmark("pope").examples(tmp_path / data))
        message = str(caught.value)
        assert first in message and second in message and "\n" not in message, message


def test_text_data_reads_a_bom_and_names_the_line_of_anything_it_cannot_read(tmp_path):
    lines = [json.dumps(pope_row("a")), json.dumps(["not", "an", "object"]), json.dumps(pope_row("b"))]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    examples = list(get_benchmark("pope").examples(tmp_path / "bom.jsonl"))
    assert isinstance(examples[0], Example) and examples[0].id == "a"  # the BOM is not part of the first row
    assert isinstance(examples[1], Unusable) and f"{tmp_path / 'bom.jsonl'}:2" in examples[1].reason
    assert "not an object" in examples[1].reason and examples[2].id == "b"
    (tmp_path / "latin1.jsonl").write_bytes(json.dumps(pope_row("a")).encode() + b"\n" +
                                            b'{"id": "b", "question": "Is there a caf\xe9?", "answer": "yes"}\n')
    with pytest.raises(UserError, match=r"latin1\.jsonl:2: not UTF-8 text .*save the file as UTF-8"):
        list(get_benchmark("pope").examples(tmp_path / "latin1.jsonl"))
    (tmp_path / "rows.json").write_text('[\n{"id": "a"},\n{"id": "b",\n]')
    with pytest.raises(UserError, match=r"rows\.json:4: not valid JSON"):
        list(get_benchmark("pope").examples(tmp_path / "rows.json"))
    (tmp_path / "rows.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([pope_row("a")]).encode())
    assert [e.id for e in get_benchmark("pope").examples(tmp_path / "rows.json")] == ["a"]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    pytest.importorskip("pyarrow", reason="reading parquet needs the eval extra (pyarrow)")
    with pytest.raises(UserError, match=r"broken\.parquet is not a readable parquet file"):
        list(get_benchmark("pope").examples(tmp_path / "broken.parquet"))


def test_images_are_read_at_their_bit_depth_and_unreadable_ones_are_named(tmp_path):
    """A 16-bit PNG was read blank by convert("RGB"); a decompression bomb escaped as a crash."""
    import numpy as np

    gray = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(gray).save(tmp_path / "flat.png")
    header = bytearray((tmp_path / "flat.png").read_bytes())
    header[16:24] = (20000).to_bytes(4, "big") * 2  # a header that claims 20000x20000
    import zlib

    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")
    (tmp_path / "bomb.png").write_bytes(bytes(header))
    rows = [pope_row("deep", image="deep.png"), pope_row("flat", image="flat.png"), pope_row("bomb", image="bomb.png")]
    (tmp_path / "pope.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    deep, flat, bomb = get_benchmark("pope").examples(tmp_path / "pope.jsonl")
    assert np.array_equal(np.asarray(deep.load_image()), np.asarray(flat.load_image()))
    with pytest.raises(UnusableImage, match="decompression bomb") as caught:
        bomb.load_image()
    assert str(tmp_path / "bomb.png") in str(caught.value) and bomb.image_name == str(tmp_path / "bomb.png")
    assert bomb.source == f"{tmp_path / 'pope.jsonl'}:3"


def test_shapes_from_generator_and_from_written_files(tmp_path):
    from functional_heads.evaluation.benchmarks import shapes_generator as shapes

    bench = get_benchmark("shapes")
    generated = list(bench.examples(None, "dev"))
    assert len(generated) == shapes.EVAL_SIZES["dev"]
    shapes.write_split("dev", tmp_path, n=16)
    written = list(bench.examples(tmp_path / "dev.jsonl"))
    assert [e.id for e in written] == [e.id for e in generated[:16]]
    item = shapes.make_item("dev", 0)
    good = bench.score(written[0], item.target)
    assert good.score == 1.0 and good.failure is None
    wrong_count = f"<think> {item.chain.split(' : ')[0]} : r1c1 = 1 </think> <answer> 1 </answer>"
    assert bench.score(written[0], wrong_count).failure == "perceptual"
    assert bench.score(written[0], item.target.replace("<answer> 3", "<answer> 4")).failure == "drift"


@pytest.mark.slow
def test_a_benchmark_from_an_installed_package_works_in_eval_tune_and_report(tmp_path, installed_plugin):
    """A user's benchmark, declared under the entry-point group, is found by name by every command."""
    plugin = installed_plugin("toy_bench", '''
        from functional_heads.evaluation.benchmarks.shapes import Shapes

        class ToyShapes(Shapes):
            name = "toy-shapes"
    ''', "functional_heads.benchmarks", "toy-shapes", "ToyShapes")
    data = tmp_path / "data"
    shapes.write_split("dev", data, 48)
    shapes.write_split("calib", data, 16)
    env = {**os.environ, "PYTHONPATH": str(plugin), "OMP_NUM_THREADS": "1"}
    fheads = [sys.executable, "-m", "functional_heads.apps.cli"]
    model = str(bundled_model_path())

    def run(*args):
        result = subprocess.run([*fheads, *args], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    run("eval", "--model", model, "--bench", "toy-shapes", "--data", str(data), "--split", "dev", "--limit", "4",
        "--max-new-tokens", "64", "--out", str(tmp_path / "runs"))
    run_folder, = (tmp_path / "runs").iterdir()
    assert run_folder.name.startswith("toy-shapes-vanilla-")
    run("report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"))
    assert json.loads((tmp_path / "report" / "report.json").read_text())["toy-shapes"]["methods"]["vanilla"]["n"] == 4
    if importlib.util.find_spec("optuna") is not None:
        run("tune", "--model", model, "--bench", "toy-shapes", "--data", str(data), "--calib-split", "calib",
            "--out", str(tmp_path / "tune"), "--trials", "2", "--min-effect", "0.3", "--min-items", "8",
            "--batch-size", "24", "--max-new-tokens", "64")
        assert json.loads((tmp_path / "tune" / "tune.json").read_text())["benchmark"] == "toy-shapes"


def test_shapes_metrics_count_location_errors_and_right_answers_with_wrong_facts():
    """A right answer stating a wrong count is right (and counted apart); right counts in wrong cells with a
    wrong answer are a location error, not a perceptual one."""
    bench = get_benchmark("shapes")
    scene = shapes.Scene((("red", "circle"), None, None, None, ("red", "square"), None, None, None, None))
    item = shapes.Item("dev-x", "dev", "count_colour", scene, "how many red shapes are there ?",
                       "red : r1c1 r2c2 = 2", "2")
    example = bench._example(item, scene.render())
    outputs = [item.target, "<think> red : r1c1 r2c2 = 3 </think> <answer> 2 </answer>",
               "<think> red : r1c2 r3c3 = 2 </think> <answer> 3 </answer>"]
    records = []
    for output in outputs:
        s = bench.score_output(example, output)
        records.append({"id": example.id, "score": s.score, "failure": s.failure, "prediction": output,
                        "category": example.category, "info": example.info})
    assert [r["failure"] for r in records] == [None, None, "location"]
    metrics = bench.metrics(records)
    assert metrics["right_with_wrong_fact_rate"] == pytest.approx(1 / 3)
    assert metrics["location_rate"] == pytest.approx(1 / 3) and metrics["perceptual_rate"] == 0.0
