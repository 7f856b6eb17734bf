"""training/reasoning_tune.py: the reasoning-tuning data, its fact mask, and a deterministic short run."""

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest

import functional_heads as fh
from functional_heads.evaluation.benchmarks import shapes_generator as shapes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import reasoning_tune  # noqa: E402
from train_shapes_model import encode_batch  # noqa: E402


def test_long_and_text_items_are_right_and_use_the_vocabulary():
    rng, vocab = random.Random(0), set(shapes.vocabulary())
    for _ in range(300):
        scene, question, target = reasoning_tune.long_item(rng)
        assert set(question.split()) | set(target.split()) <= vocab
        facts = shapes.stated_facts(target)
        assert len(facts) == 6 and all(scene.fact(k) == v for k, v in facts.items())
        question, target = reasoning_tune.text_item(rng)
        assert set(question.split()) | set(target.split()) <= vocab and "<answer>" in target


def test_long_item_answer_is_the_weighted_sum():
    scene, question, target = reasoning_tune.long_item(random.Random(3))
    words = question.split()
    weights = {words[i - 1] if words[i - 1] != "object" else words[i - 2]: int(words[i + 1])
               for i, w in enumerate(words) if w == "scores"}
    counts = {k: scene.count(colour=k) if k in shapes.COLOURS else scene.count(shape=k) for k in weights}
    assert target.endswith(f"<answer> {sum(counts[k] * weights[k] for k in weights)} </answer>")


def test_fact_mask_covers_the_perceptual_statements_only():
    target = "<think> red : r1c2 = 1 . blue : none = 0 . 1 * 4 = 4 . 0 * 3 = 0 . 4 + 0 = 4 </think> <answer> 4 </answer>"
    words = target.split()
    masked = reasoning_tune.fact_words(target)
    assert [words[i] for i in sorted(masked)] == "red : r1c2 = 1 blue : none = 0".split()
    processor = fh.load_processor(fh.bundled_model_path())
    batch = encode_batch(processor, None, ["red : 1 . what is the total score ?"], [target], [masked])
    supervised = batch["input_ids"][0][batch["labels"][0] != -100]
    assert processor.tokenizer.decode(supervised).split() == \
        "<think> . . 1 * 4 = 4 . 0 * 3 = 0 . 4 + 0 = 4 </think> <answer> 4 </answer> <|im_end|>".split()


@pytest.mark.slow
def test_a_short_run_is_deterministic(tmp_path):
    digests = []
    for name in ("a", "b"):
        subprocess.run([sys.executable, str(ROOT / "training" / "reasoning_tune.py"), "--out", str(tmp_path / name),
                        "--steps", "3", "--batch-size", "4", "--text-share", "0.5", "--mask-facts",
                        "--check-items", "8", "--dev-items", "8"], check=True, capture_output=True)
        digests.append(hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    base = hashlib.sha256((fh.bundled_model_path() / "model.safetensors").read_bytes()).hexdigest()
    assert digests[0] != base  # it trained
