"""Hooks of the shapes_local lmms-eval task (paths relative to the repository root, as in the YAML)."""

from PIL import Image

from functional_heads.evaluation.benchmarks import answers

DATA = "runs/lmms_shapes/"


def doc_to_visual(doc):
    return [Image.open(DATA + doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]


def process_results(doc, results):
    return {"accuracy": float(answers.final_answer(results[0]) == doc["answer"])}
