"""The project's synthetic `shapes` benchmark (items from `functional_heads.evaluation.shapes_generator`).
Official code: ours.

Data: none needed (items come from the deterministic generator; `--split` picks calib, dev or test), or
the folder (or one of its JSONL files) that `fheads data shapes` writes. Scoring: the answer tag, with
each wrong answer classified as a perceptual error (a wrong count or attribute), a location error (right
counts in wrong cells), reasoning drift or malformed; metrics add their rates, accuracy per family, and
the share of right answers that state a wrong count or attribute (`right_with_wrong_fact_rate`).
"""

from __future__ import annotations

from . import shapes_generator as shapes
from .base import Benchmark, Example, Scored, mean_or_none


class Shapes(Benchmark):
    name = "shapes"
    default_split = "test"
    needs_data = False
    truncation_rule = False  # its own scorer labels an output without an answer tag 'malformed'
    failure_labels = shapes.FAILURES

    def examples(self, path=None, split=None):
        if path is not None:
            yield from super().examples(path, split)
            return
        for item in shapes.items(split or self.default_split):
            yield self._example(item, item.scene.render())

    def example(self, row, index):
        scene = shapes.Scene(tuple(tuple(c) if c else None for c in row["scene"]))
        item = shapes.Item(row["id"], row["split"], row["family"], scene, row["question"], row["chain"], row["answer"],
                           row.get("variant", ""))
        return self._example(item, row["image"])

    @staticmethod
    def _example(item, image):
        return Example(item.id, image, item.question, item.answer, item.family,
                       {"scene": [list(c) if c else None for c in item.scene.cells], "chain": item.chain})

    def score(self, example, output):
        scene = shapes.Scene(tuple(tuple(c) if c else None for c in example.info["scene"]))
        item = shapes.Item(example.id, "", example.category, scene, example.prompt, example.info["chain"], example.gold)
        outcome = shapes.score(item, output)
        return Scored(outcome.predicted, float(outcome.correct), outcome.error)

    def metrics(self, records):
        result = super().metrics(records)
        for kind in self.failure_labels:
            result[f"{kind}_rate"] = mean_or_none(r.get("failure") == kind for r in records)
        with_scene = [r for r in records if (r.get("info") or {}).get("scene")]
        result["right_with_wrong_fact_rate"] = mean_or_none(
            r["score"] == 1.0 and bool(self.fact_errors(r)[0]) for r in with_scene)
        return result

    @staticmethod
    def reference_answer(example: Example) -> str:
        """The item's reference answer (its exact chain and answer), to teacher-force into any model."""
        return f"<think> {example.info['chain']} </think> <answer> {example.gold} </answer>"

    @staticmethod
    def fact_errors(record: dict) -> tuple[list[str], list[str]]:
        """A record's wrong counts or attributes, and its right counts in wrong cells."""
        scene = shapes.Scene(tuple(tuple(c) if c else None for c in record["info"]["scene"]))
        return shapes.fact_errors(scene, shapes.stated_facts(record.get("prediction") or ""))
