"""The lab's second protocol (docs/protocols/lab-v2.md), one experiment per subcommand, on one base model and
its reasoning-tuned seeds. Every answer and S_v measurement is cached under OUT/cache, so a stopped run
resumes and the experiments share the models' vanilla answers.

    python scripts/lab_v2.py e1 --base DIR --tuned DIR [--tuned DIR ...] [--out lab-v2]   # premise
    python scripts/lab_v2.py e2 --base DIR --tuned DIR ...                                   # part swap, probe
    python scripts/lab_v2.py e3 --base DIR --tuned DIR ...                                   # restore S_v
    python scripts/lab_v2.py e5 --base DIR --tuned DIR ... [--methods OUT/methods]           # the method

E5 reads each seed's run folders, made by `bash scripts/lab_v2_method.sh SEED_DIR OUT/methods/SEED_NAME`.

Each writes OUT/eN/eN.json and eN.md and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import functional_heads as fh  # noqa: E402
from functional_heads.core.image_bias import bias_matching, image_key_bias, mean_sv_under_bias  # noqa: E402
from functional_heads.core.ratios import query_positions  # noqa: E402
from functional_heads.evaluation import premise  # noqa: E402
from functional_heads.evaluation.benchmarks import get_benchmark  # noqa: E402
from functional_heads.evaluation.benchmarks import shapes_generator as shapes  # noqa: E402
from functional_heads.evaluation.engine import Decoding, HFBackend, answer_all  # noqa: E402
from functional_heads.evaluation.methods import get_method  # noqa: E402
from functional_heads.evaluation.methods.registry import Method  # noqa: E402
from functional_heads.evaluation.probe import image_token_states, linear_probe  # noqa: E402
from functional_heads.evaluation.report import load_runs  # noqa: E402
from functional_heads.evaluation.stats import detectable_effect, holm  # noqa: E402
from functional_heads.models.architectures import locate  # noqa: E402
from functional_heads.models.loading import prompt_inputs  # noqa: E402
from functional_heads.models.parts import copy_vision_side  # noqa: E402
from functional_heads.utils.files import atomic_write_text  # noqa: E402

DECODING = Decoding(max_new_tokens=shapes.MAX_ANSWER_TOKENS)
CELL_CLASSES = [None] + [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
PROBE_SEED = 20261203
BATCH = 64


@dataclass
class Plan:
    """The protocol's splits and sizes (the defaults); smaller ones only for trying the script on read splits."""

    split: str = "test2"  # the report split, read once per experiment by this script
    items: int | None = None  # all of it
    sv_items: int = 2000  # S_v along the chains on the first 2000 items (the rates on all of them)
    choose: str = "dev2"  # choosing and confirming
    search_items: int = 1200  # the choosing split's first half: where E3's biases are set
    probe_train: int = 4000
    probe_test: int = 2000


class Lab:
    def __init__(self, out: Path, base: Path, tuned: list[Path], plan: Plan, methods: Path | None = None):
        self.out, self.base, self.tuned, self.plan = out, base, tuned, plan
        self.methods = methods or out / "methods"  # E5: one folder per seed, named as the seed's model folder
        self.bench = get_benchmark("shapes")
        self._examples = {}

    def examples(self, split: str) -> list:
        if split not in self._examples:
            examples = list(self.bench.examples(None, split))
            self._examples[split] = examples[:self.plan.items] if split == self.plan.split else examples
        return self._examples[split]

    def cache(self, *parts: str) -> Path:
        path = self.out.joinpath("cache", *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def records(self, label: str, load, method: Method | None = None) -> list[dict]:
        """Greedy answers on the report split of the model `load()` gives (vanilla, or `method`), cached."""
        split = self.plan.split
        path = self.cache("records", f"{label}-{split}-{len(self.examples(split))}.jsonl")
        if path.is_file():
            return [json.loads(line) for line in path.read_text().splitlines()]
        model, processor = load()
        examples = self.examples(split)
        records = answer_all(HFBackend(model, processor), self.bench, examples, method or get_method("vanilla"),
                             DECODING, batch_size=BATCH, progress=True)
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        return records

    def along(self, label: str, load, records: list[dict], chain: str) -> premise.AlongAnswers:
        """S_v at i* and along the first sv_items answers of `records` (own) or the reference answers."""
        path = self.cache("along", f"{label}-{chain}-{self.plan.split}-{self.plan.sv_items}.pt")
        if path.is_file():
            saved = torch.load(path)
            return premise.AlongAnswers(saved["ratios"], saved["image_share"])
        model, processor = load()
        examples = self.examples(self.plan.split)[:self.plan.sv_items]
        answers = [self.bench.reference_answer(e) for e in examples] if chain == "reference" else None
        _, along = premise.along_records(model, processor, examples, {r["id"]: r for r in records}, answers,
                                         progress=True)
        torch.save({"ratios": along.ratios, "image_share": along.image_share}, path)
        return along


def loader(path: Path, vision_from: Path | None = None):
    """A function that loads the model at `path` (float32), with the vision side of `vision_from` if given."""
    def load():
        model = fh.load_model(path, dtype=torch.float32)
        if vision_from is not None:
            copy_vision_side(model, fh.load_model(vision_from, dtype=torch.float32))
        return model, fh.load_processor(path)
    return load


def rate(records: list[dict], kind: str) -> float:
    return sum(r.get("failure") == kind for r in records) / len(records)


def paired_event(a: list[dict], b: list[dict], event) -> dict:
    """`premise.paired_rate` of `event` in b against a, with both rates and the share of items that changed."""
    x, y = [event(r) for r in a], [event(r) for r in b]
    return {**premise.paired_rate(a, b, event), "base": sum(x) / len(x), "tuned": sum(y) / len(y),
            "change_rate": sum(p != q for p, q in zip(x, y)) / len(x)}


def perceptual_test(a: list[dict], b: list[dict]) -> dict:
    """Perceptual errors of b against a on the same items: difference with its CI, McNemar."""
    return paired_event(a, b, lambda r: r.get("failure") == "perceptual")


def closure(base: float, tuned: float, changed: float) -> float | None:
    """The share of the perception gap (tuned - base) that a change closes: (tuned - changed) / (tuned - base)."""
    gap = tuned - base
    return None if abs(gap) < 1e-12 else (tuned - changed) / gap


def pct(x: float) -> str:
    return f"{x:.1%}"


def write(out: Path, name: str, result: dict, text: str) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{name}.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(folder / f"{name}.md", text)
    print(text)


# ---------------------------------------------------------------- E1: the premise

def e1(lab: Lab) -> None:
    base = lab.records("base", loader(lab.base))
    base_along = {chain: lab.along("base", loader(lab.base), base, chain) for chain in ("own", "reference")}
    per_seed, tests = {}, []
    for path in lab.tuned:
        label = path.name
        tuned = lab.records(label, loader(path))
        along = {chain: lab.along(label, loader(path), tuned, chain) for chain in ("own", "reference")}
        rates = _rates(base, tuned, family=(1 + len(shapes.FAILURES)) * len(lab.tuned))
        n = lab.plan.sv_items
        sv = {chain: premise.compare((base[:n], base_along[chain]), (tuned[:n], along[chain]))
              for chain in ("own", "reference")}
        summaries = {chain: {"base": premise.summary(base[:n], base_along[chain]),
                             label: premise.summary(tuned[:n], along[chain])} for chain in ("own", "reference")}
        per_seed[label] = {"rates": rates, "sv": {c: {k: v for k, v in sv[c].items() if "half" in k} for c in sv},
                           "summaries": summaries}
        tests += [(label, key, rates[key]["mcnemar"]) for key in ("accuracy", *shapes.FAILURES)]
    for (_, _, test), adjusted in zip(tests, holm([t["p"] for _, _, t in tests])):
        test["p_holm_family"] = adjusted
    holds = [per_seed[p.name]["rates"]["perceptual"]["mean"] > 0
             and per_seed[p.name]["rates"]["perceptual"]["mcnemar"]["p_holm_family"] < 0.01 for p in lab.tuned]
    result = {"split": lab.plan.split, "items": len(base), "sv_items": lab.plan.sv_items,
              "family": f"{len(tests)} rate tests (accuracy and the four failures, each seed against the base), Holm",
              "per_seed": per_seed,
              "base_rates": {k: rate(base, k) for k in shapes.FAILURES} | {"accuracy": _accuracy(base)},
              "criterion_holds_in": sum(holds), "seeds": len(holds)}
    write(lab.out, "e1", result, e1_markdown(result))


def _accuracy(records):
    return sum(bool(r["score"]) for r in records) / len(records)


def _rates(base: list[dict], tuned: list[dict], family: int) -> dict:
    if [r["id"] for r in base] != [r["id"] for r in tuned]:
        raise SystemExit("the two models' records are not the same items")
    out = {}
    for key in ("accuracy", *shapes.FAILURES):
        event = (lambda r: bool(r["score"])) if key == "accuracy" else (lambda r, k=key: r.get("failure") == k)
        test = paired_event(base, tuned, event)
        out[key] = {**test, "detectable_at_holm_level": detectable_effect(len(base), test["change_rate"],
                                                                          alpha=0.01 / family)}
    return out


def e1_markdown(result: dict) -> str:
    seeds = list(result["per_seed"])
    rows = [f"# E1, the premise: base against each reasoning-tuned seed on {result['split']} ({result['items']} "
            "items)", "",
            f"Family: {result['family']}. Criterion (protocol): perceptual rate rises with Holm p < 0.01 in all three "
            f"seeds. It holds in {result['criterion_holds_in']} of {result['seeds']}.", "",
            "| rate | base | " + " | ".join(seeds) + " |", "|---" * (2 + len(seeds)) + "|"]
    for key in ("accuracy", *shapes.FAILURES):
        cells = []
        for seed in seeds:
            r = result["per_seed"][seed]["rates"][key]
            cells.append(f"{pct(r['tuned'])} ({r['mean']:+.1%} [{r['ci'][0]:+.1%}, {r['ci'][1]:+.1%}], "
                         f"Holm p={r['mcnemar']['p_holm_family']:.2g})")
        rows.append(f"| {key} | {pct(result['base_rates'][key])} | " + " | ".join(cells) + " |")
    rows += ["", "Power: the smallest difference each test detects with power 0.8 at the strictest Holm level "
             f"(0.01/{5 * len(seeds)}), given its observed change rate:", "",
             "| rate | " + " | ".join(seeds) + " |", "|---" * (1 + len(seeds)) + "|"]
    for key in ("accuracy", *shapes.FAILURES):
        rows.append(f"| {key} | " + " | ".join(
            f"{result['per_seed'][s]['rates'][key]['detectable_at_holm_level']:.1%}" for s in seeds) + " |")
    for chain, title in (("own", "each model's own answers"), ("reference", "the reference answers (teacher-forced, "
                                                                            "same positions in both models)")):
        rows += ["", f"## S_v along {title}, first {result['sv_items']} items", ""]
        for seed in seeds:
            rows += [f"### base against {seed}", "",
                     premise.premise_markdown(result["per_seed"][seed]["summaries"][chain],
                                              _sv_only(result["per_seed"][seed], chain)).split("\n\n", 1)[1]]
    return "\n".join(rows) + "\n"


def _sv_only(seed: dict, chain: str) -> dict:
    """premise_markdown's difference, with the rate cells (not measured on the S_v subset) left out."""
    return {**{k: seed["rates"][k] | {"mcnemar": {**seed["rates"][k]["mcnemar"],
                                                  "p_holm": seed["rates"][k]["mcnemar"]["p_holm_family"]}}
               for k in ("accuracy", *shapes.FAILURES)}, **seed["sv"][chain]}


# ---------------------------------------------------------------- E2: where the loss sits

def e2(lab: Lab) -> None:
    base = lab.records("base", loader(lab.base))
    per_seed = {}
    for path in lab.tuned:
        label = path.name
        tuned = lab.records(label, loader(path))
        tuned_lm_base_vision = lab.records(f"{label}-lm+base-vision", loader(path, vision_from=lab.base))
        base_lm_tuned_vision = lab.records(f"base-lm+{label}-vision", loader(lab.base, vision_from=path))
        b, t, swapped = rate(base, "perceptual"), rate(tuned, "perceptual"), rate(tuned_lm_base_vision, "perceptual")
        per_seed[label] = {
            "perceptual": {"base": b, "tuned": t, "tuned_lm+base_vision": swapped,
                           "base_lm+tuned_vision": rate(base_lm_tuned_vision, "perceptual")},
            "accuracy": {"base": _accuracy(base), "tuned": _accuracy(tuned),
                         "tuned_lm+base_vision": _accuracy(tuned_lm_base_vision),
                         "base_lm+tuned_vision": _accuracy(base_lm_tuned_vision)},
            "closure_by_base_vision": closure(b, t, swapped),
            "tuned_lm+base_vision_vs_tuned": perceptual_test(tuned, tuned_lm_base_vision),
            "base_lm+tuned_vision_vs_base": perceptual_test(base, base_lm_tuned_vision)}
    closures = [s["closure_by_base_vision"] for s in per_seed.values() if s["closure_by_base_vision"] is not None]
    mean_closure = sum(closures) / len(closures) if closures else None
    holds = mean_closure is not None and mean_closure >= 0.5 and sum(c >= 0.5 for c in closures) >= 2
    probes = probe_vision_sides(lab)
    result = {"split": lab.plan.split, "items": len(base), "per_seed": per_seed, "mean_closure": mean_closure,
              "loss_in_vision_side": holds, "probe": probes, "probe_train": lab.plan.probe_train,
              "probe_test": lab.plan.probe_test}
    write(lab.out, "e2", result, e2_markdown(result))


def probe_vision_sides(lab: Lab) -> dict:
    """Linear probes of each cell's content on the image tokens of each model's vision side."""
    rng = random.Random(PROBE_SEED)
    train_scenes = [shapes.draw_scene(rng) for _ in range(lab.plan.probe_train)]
    test_scenes = [item.scene for item in shapes.items(lab.plan.split, n=lab.plan.probe_test)]

    def labels(scenes):
        return torch.tensor([CELL_CLASSES.index(c) for s in scenes for c in s.cells])

    out = {}
    for label, path in [("base", lab.base)] + [(p.name, p) for p in lab.tuned]:
        path_cache = lab.cache("probe", f"{label}-{lab.plan.split}-{lab.plan.probe_train}-{lab.plan.probe_test}.pt")
        if path_cache.is_file():
            out[label] = torch.load(path_cache)
            continue
        model, processor = fh.load_model(path, dtype=torch.float32), fh.load_processor(path)
        train = image_token_states(model, processor, [s.render() for s in train_scenes], progress=True)
        test = image_token_states(model, processor, [s.render() for s in test_scenes], progress=True)
        groups = torch.arange(len(test_scenes)).repeat_interleave(test.shape[1]).tolist()
        out[label] = linear_probe(train.reshape(-1, train.shape[-1]), labels(train_scenes),
                                  test.reshape(-1, test.shape[-1]), labels(test_scenes), groups)
        torch.save(out[label], path_cache)
    return out


COMBINATIONS = ("base", "tuned", "tuned_lm+base_vision", "base_lm+tuned_vision")


def e2_markdown(result: dict) -> str:
    rows = [f"# E2, where the perception loss sits: language model x vision side, {result['split']} "
            f"({result['items']} items)",
            "", "Perceptual error rate (accuracy in brackets):", "",
            "| seed | base | tuned | tuned LM + base vision | base LM + tuned vision | share of the gap closed by "
            "the base vision side | tuned LM + base vision vs tuned (McNemar p) |", "|---" * 7 + "|"]
    for seed, s in result["per_seed"].items():
        p, a = s["perceptual"], s["accuracy"]
        cells = [f"{pct(p[k])} ({pct(a[k])})" for k in COMBINATIONS]
        c = s["closure_by_base_vision"]
        test = s["tuned_lm+base_vision_vs_tuned"]
        rows.append(f"| {seed} | " + " | ".join(cells) + f" | {'n/a' if c is None else f'{c:.0%}'} | "
                    f"{test['mean']:+.1%} [{test['ci'][0]:+.1%}, {test['ci'][1]:+.1%}], p={test['mcnemar']['p']:.2g} |")
    mc = result["mean_closure"]
    rows += ["", f"Mean share closed: {'n/a' if mc is None else f'{mc:.0%}'}. Criterion (protocol): the loss sits "
             f"in the vision side if the base vision side closes at least half of the gap on average and in at least "
             f"two of three seeds: **{'yes' if result['loss_in_vision_side'] else 'no'}**.", "",
             f"Linear probe of each cell's content (empty or one of 9 colour-shape pairs) on the image tokens, trained "
             f"on {result['probe_train']} scenes drawn by the generator with seed {PROBE_SEED}, tested on the first "
             f"{result['probe_test']} scenes of {result['split']} (exploratory; 95% bootstrap over scenes):", "",
             "| vision side of | accuracy [95% CI] | always the commonest class |", "|---|---|---|"]
    for label, probe in result["probe"].items():
        rows.append(f"| {label} | {pct(probe['accuracy'])} [{pct(probe['ci'][0])}, {pct(probe['ci'][1])}] | "
                    f"{pct(probe['majority_baseline'])} |")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------- E3: restore S_v with an image-key bias

class ImageKeyBiasMethod(Method):
    """Vanilla decoding with a fixed image-key bias per head (E3's intervention)."""

    name = "image-key-bias"

    def __init__(self, bias: torch.Tensor):
        self.bias = bias
        super().__init__()

    def decode(self, model, processor, inputs, images, prompts, **generate_kwargs):
        with image_key_bias(model, inputs["input_ids"], self.bias, attention_mask=inputs["attention_mask"]):
            return model.generate(**inputs, **generate_kwargs)


def prompt_batches(processor, examples: list, batch_size: int = BATCH) -> list[dict]:
    return [prompt_inputs(processor, [e.load_image() for e in examples[lo:lo + batch_size]],
                          [e.prompt for e in examples[lo:lo + batch_size]])
            for lo in range(0, len(examples), batch_size)]


def normalised_sv_at_i_star(model, batches: list[dict]) -> torch.Tensor:
    """[layers, heads] mean over prompts of S_v at i* over the image tokens' share of the prompt."""
    image_token = locate(model).image_token_id
    total, count = None, 0
    for inputs in batches:
        ratios = fh.visual_attention_ratios(model, inputs)  # [batch, layers, heads]
        i_star = query_positions(inputs["attention_mask"], inputs["input_ids"])[:, None]
        share = premise.image_share(inputs["input_ids"], inputs["attention_mask"], i_star, image_token)[:, 0]
        normalised = (ratios / share[:, None, None]).sum(0)
        total = normalised if total is None else total + normalised
        count += len(ratios)
    return total / count


def e3(lab: Lab) -> None:
    torch.set_grad_enabled(False)
    base_model, processor = loader(lab.base)()
    calib = prompt_batches(processor, lab.examples("calib"))
    search = prompt_batches(processor, lab.examples(lab.plan.choose)[:lab.plan.search_items])
    base_normalised = normalised_sv_at_i_star(base_model, calib)
    target = mean_sv_under_bias(base_model, search, torch.zeros_like(base_normalised))
    base = lab.records("base", loader(lab.base))
    per_seed, tests = {}, []
    for path in lab.tuned:
        label = path.name
        model, _ = loader(path)()
        fall = base_normalised - normalised_sv_at_i_star(model, calib)
        k = max(1, round(0.1 * fall.numel()))
        chosen = torch.zeros_like(fall, dtype=torch.bool).flatten()
        chosen[fall.flatten().topk(k).indices] = True
        chosen = chosen.view_as(fall)
        before = mean_sv_under_bias(model, search, torch.zeros_like(fall))
        bias, reached = bias_matching(model, search, target, chosen)
        tuned = lab.records(label, loader(path))
        restored = lab.records(f"{label}-image-key-bias", loader(path), ImageKeyBiasMethod(bias))
        test = perceptual_test(tuned, restored)
        heads = [[int(layer), int(head)] for layer, head in chosen.nonzero().tolist()]
        per_seed[label] = {
            "heads": heads, "normalised_fall": [float(fall[layer, head]) for layer, head in heads],
            "bias": [float(bias[layer, head]) for layer, head in heads],
            "sv_base": [float(target[layer, head]) for layer, head in heads],
            "sv_tuned": [float(before[layer, head]) for layer, head in heads],
            "sv_reached": [float(reached[layer, head]) for layer, head in heads],
            "perceptual": {"base": rate(base, "perceptual"), "tuned": rate(tuned, "perceptual"),
                           "restored": rate(restored, "perceptual")},
            "accuracy": {"base": _accuracy(base), "tuned": _accuracy(tuned), "restored": _accuracy(restored)},
            "closure": closure(rate(base, "perceptual"), rate(tuned, "perceptual"), rate(restored, "perceptual")),
            "test": test}
        tests.append(test["mcnemar"])
    for test, adjusted in zip(tests, holm([t["p"] for t in tests])):
        test["p_holm"] = adjusted
    closures = [s["closure"] for s in per_seed.values() if s["closure"] is not None]
    mean_closure = sum(closures) / len(closures) if closures else None
    verdict = ("causal" if mean_closure is not None and mean_closure >= 0.5 and sum(c >= 0.5 for c in closures) >= 2
               else "not what broke" if mean_closure is not None and mean_closure < 0.25 else "undecided")
    result = {"split": lab.plan.split, "items": len(base), "search_items": lab.plan.search_items,
              "choose": lab.plan.choose, "per_seed": per_seed,
              "mean_closure": mean_closure, "verdict": verdict,
              "family": f"{len(tests)} tests (perceptual errors, restored against tuned vanilla, one per seed), Holm"}
    write(lab.out, "e3", result, e3_markdown(result))


def e3_markdown(result: dict) -> str:
    rows = [f"# E3, is attention allocation causal? Image-key bias restoring the base's S_v at i*, {result['split']} "
            f"({result['items']} items)", "",
            f"Biases set by bisection on the first {result['search_items']} items of {result['choose']}; heads: the "
            "10% whose "
            "normalised S_v at i* fell most from base to tuned on calib.", "",
            "| seed | head (layer, head) | S_v base | S_v tuned | S_v with bias | bias (logits) |", "|---" * 6 + "|"]
    for seed, s in result["per_seed"].items():
        for i, head in enumerate(s["heads"]):
            rows.append(f"| {seed} | {tuple(head)} | {s['sv_base'][i]:.3f} | {s['sv_tuned'][i]:.3f} | "
                        f"{s['sv_reached'][i]:.3f} | {s['bias'][i]:+.2f} |")
    rows += ["", f"Perceptual error rate (accuracy in brackets); family: {result['family']}:", "",
             "| seed | base | tuned | tuned, S_v restored | share of the gap closed | restored vs tuned [95% CI], "
             "McNemar p, Holm p |", "|---" * 6 + "|"]
    for seed, s in result["per_seed"].items():
        p, a, t, c = s["perceptual"], s["accuracy"], s["test"], s["closure"]
        rows.append(f"| {seed} | " + " | ".join(f"{pct(p[k])} ({pct(a[k])})" for k in ("base", "tuned", "restored"))
                    + f" | {'n/a' if c is None else f'{c:.0%}'} | {t['mean']:+.1%} [{t['ci'][0]:+.1%}, "
                    f"{t['ci'][1]:+.1%}], p={t['mcnemar']['p']:.2g}, Holm p={t['mcnemar']['p_holm']:.2g} |")
    mc = result["mean_closure"]
    rows += ["", f"Mean share closed: {'n/a' if mc is None else f'{mc:.0%}'}. Verdict (protocol: causal if at least "
             f"half on average and in two of three seeds; not what broke if less than a quarter): "
             f"**{result['verdict']}**."]
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------- E5: the method, tuned on dev2, on test2

E5_METHODS = ("static", "dynamic", "perception-only", "reasoning-only", "vcd", "pai")


def method_records(folder: Path, split: str) -> dict[str, list[dict]]:
    """Each method's records in the run folders under `folder` on `split`, in item order."""
    out = {}
    for run in load_runs(folder):
        settings = run["settings"]
        if settings.get("split") not in (None, split):
            continue
        if settings["method"] in out:
            raise SystemExit(f"{folder}: two runs of {settings['method']} on {split}; keep one")
        out[settings["method"]] = [run["records"][key] for key in sorted(run["records"])]
    return out


def e5(lab: Lab) -> None:
    base = {r["id"]: r for r in lab.records("base", loader(lab.base))}  # E1's cached answers
    per_seed, accuracy_tests, goal_tests = {}, [], []
    for path in lab.tuned:
        label = path.name
        folder = lab.methods / label
        runs = method_records(folder / "runs", lab.plan.split)
        missing = [m for m in ("vanilla", *E5_METHODS) if m not in runs]
        if missing:
            raise SystemExit(f"{folder / 'runs'} has no run of {', '.join(missing)} on {lab.plan.split}: run "
                             f"`bash scripts/lab_v2_method.sh {path} {folder}` first")
        vanilla = runs["vanilla"]
        ids = [r["id"] for r in vanilla]
        if any([r["id"] for r in runs[m]] != ids for m in E5_METHODS) or set(ids) - set(base):
            raise SystemExit(f"{folder / 'runs'}: the methods' runs are not all on the same items as the base's")
        base_same = [base[i] for i in ids]
        methods = {}
        for method in E5_METHODS:
            test = paired_event(vanilla, runs[method], lambda r: bool(r["score"]))
            methods[method] = {"accuracy": test, "perceptual": rate(runs[method], "perceptual")}
            accuracy_tests.append(test["mcnemar"])
        goal = perceptual_test(vanilla, runs["static"])
        goal["detectable_at_holm_level"] = detectable_effect(len(ids), goal["change_rate"], alpha=0.01 / 3)
        goal_tests.append(goal["mcnemar"])
        tune = json.loads((folder / "tune" / "tune.json").read_text())
        confirmation = tune.get("confirmation") or {}
        per_seed[label] = {
            "items": len(ids), "methods": methods, "goal_test": goal,
            "perceptual": {"base": rate(base_same, "perceptual"), "vanilla": rate(vanilla, "perceptual"),
                           "static": rate(runs["static"], "perceptual")},
            "accuracy": {"base": _accuracy(base_same), "vanilla": _accuracy(vanilla)},
            "recovered": closure(rate(base_same, "perceptual"), rate(vanilla, "perceptual"),
                                 rate(runs["static"], "perceptual")),
            "tune": {"candidate": (tune.get("candidate") or {}).get("config"),
                     "confirmed": confirmation.get("confirmed"), "verdict": confirmation.get("verdict")}}
    for test, adjusted in zip(accuracy_tests, holm([t["p"] for t in accuracy_tests])):
        test["p_holm"] = adjusted
    for test, adjusted in zip(goal_tests, holm([t["p"] for t in goal_tests])):
        test["p_holm"] = adjusted
    holds = {label: s["recovered"] is not None and s["recovered"] >= 0.5 and s["goal_test"]["mean"] < 0
             and s["goal_test"]["mcnemar"]["p_holm"] < 0.01 for label, s in per_seed.items()}
    result = {"split": lab.plan.split, "per_seed": per_seed, "goal_holds": holds,
              "goal_met": sum(holds.values()) >= 2,
              "accuracy_family": f"{len(accuracy_tests)} accuracy tests ({len(E5_METHODS)} methods against vanilla x "
                                 f"{len(per_seed)} seeds), Holm",
              "goal_family": f"{len(goal_tests)} tests (perceptual errors, static against vanilla, one per seed), Holm"}
    write(lab.out, "e5", result, e5_markdown(result))


def e5_markdown(result: dict) -> str:
    seeds = list(result["per_seed"])
    rows = [f"# E5, the method tuned on dev2, on {result['split']}", "",
            f"Accuracy against vanilla (difference [95% CI], Holm p); family: {result['accuracy_family']}:", "",
            "| method | " + " | ".join(seeds) + " |", "|---" * (1 + len(seeds)) + "|",
            "| vanilla | " + " | ".join(pct(result["per_seed"][s]["accuracy"]["vanilla"]) for s in seeds) + " |"]
    for method in E5_METHODS:
        cells = []
        for seed in seeds:
            t = result["per_seed"][seed]["methods"][method]["accuracy"]
            cells.append(f"{pct(t['tuned'])} ({t['mean']:+.1%} [{t['ci'][0]:+.1%}, {t['ci'][1]:+.1%}], "
                         f"Holm p={t['mcnemar']['p_holm']:.2g})")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    rows += ["", f"The goal: static recovers at least half of the perception gap, Holm p < 0.01 (family: "
             f"{result['goal_family']}), in at least two of three seeds.", "",
             "| seed | perceptual: base | vanilla | static | share of the gap recovered | static vs vanilla [95% CI], "
             "p, Holm p | detectable (power 0.8, 0.01/3) | goal holds | tune verdict |", "|---" * 9 + "|"]
    for seed in seeds:
        s = result["per_seed"][seed]
        p, g, r = s["perceptual"], s["goal_test"], s["recovered"]
        rows.append(f"| {seed} | {pct(p['base'])} | {pct(p['vanilla'])} | {pct(p['static'])} | "
                    f"{'n/a' if r is None else f'{r:.0%}'} | {g['mean']:+.1%} [{g['ci'][0]:+.1%}, {g['ci'][1]:+.1%}], "
                    f"p={g['mcnemar']['p']:.2g}, Holm p={g['mcnemar']['p_holm']:.2g} | "
                    f"{g['detectable_at_holm_level']:.1%} | {'yes' if result['goal_holds'][seed] else 'no'} | "
                    f"{s['tune']['verdict'] or 'no confirmation'} |")
    rows += ["", f"Goal met: **{'yes' if result['goal_met'] else 'no'}** (in {sum(result['goal_holds'].values())} of "
             f"{len(seeds)} seeds)."]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("e1", "e2", "e3", "e5"))
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--tuned", type=Path, action="append", required=True, help="a reasoning-tuned seed's folder")
    parser.add_argument("--out", type=Path, default=Path("lab-v2"))
    parser.add_argument("--methods", type=Path, help="E5: the seeds' method folders (default OUT/methods)")
    defaults = Plan()
    for name in ("split", "items", "sv_items", "choose", "search_items", "probe_train", "probe_test"):
        value = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=str if name in ("split", "choose") else int,
                            default=value, help=f"(protocol: {value if value is not None else 'all'})")
    args = parser.parse_args()
    for path in [args.base] + args.tuned:
        if not (path / "config.json").is_file():
            parser.error(f"{path} is not a model folder (no config.json)")
    if len({p.name for p in args.tuned} | {"base"}) != len(args.tuned) + 1:
        parser.error("the tuned models' folders need distinct names, none of them 'base'")
    torch.set_grad_enabled(False)
    plan = Plan(**{name: getattr(args, name) for name in Plan.__dataclass_fields__})
    {"e1": e1, "e2": e2, "e3": e3, "e5": e5}[args.experiment](Lab(args.out, args.base, args.tuned, plan, args.methods))


if __name__ == "__main__":
    main()
