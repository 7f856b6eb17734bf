"""`fheads verify`: are the heads of a head map functional? Each class of heads masked against as many random
heads of the same layers, on the same items.

Conditions (every one answers the same items, in the same batches, with the same decoding):
- vanilla;
- mask-perception: the map's perception heads silenced (their outputs O_h times 0 before o_proj, through
  the rescaling hooks: `core.rescale.masked`);
- mask-perception-random{k}, k = 1..draws: in each layer, as many heads as the class has there, drawn at
  random (numpy, seeded by `seed` and the class) from that layer's heads the map selects in neither class:
  a control that silenced a head of the other class would measure that class too;
- the same for reasoning heads. A class without heads is reported as such and not tested; a layer without
  enough unselected heads for a control of the same size is refused before the model loads.

Outcomes per item: correct (score >= 1; every built-in benchmark scores 0 or 1) and, where the benchmark
classifies wrong answers (`Benchmark.failure_labels`; shapes: perceptual, location, drift, malformed),
whether the answer failed that way; a condition's rate of an outcome is over all items (as shapes reports
`{label}_rate`). Only items every condition answered (no unusable image) count.

Against vanilla: every condition's change in each outcome with a 95% paired bootstrap interval; the
class-masked conditions also with McNemar's exact test.

The key contrast, per class and outcome: class-masked minus the random controls, the draws pooled per item
(the mean of their 0/1 outcomes), with a paired bootstrap over items for the interval and a two-sided p
(`stats.paired_bootstrap_test`). Pooled rather than one test per draw: the question is whether the class
differs from random heads of its layers in general, not from one particular draw; pooling averages over
which heads were drawn and makes one test per outcome instead of one per draw (a smaller family: more
power). What it leaves out: the bootstrap resamples items, not draws, so the interval is conditional on the
draws made. The report therefore also gives the contrast against each draw, and a verdict says when a
significant contrast does not hold against every draw alone; more draws make the pool stand for random heads
of those layers better. Draws differ from each other while different controls remain.

Multiplicity: the family is every test the report gives a p for: per class with heads and per outcome, the
class-masked-vs-vanilla McNemar test and the class-vs-random contrast; `p_holm` is Holm's adjustment over
all of them. The random draws against vanilla get intervals only: they are controls, entering the verdicts
through the contrasts, and testing them too would enlarge the family.

Verdict per class, on its signature outcome (perception heads: perceptual errors; reasoning heads: drift;
accuracy where the benchmark does not label those failures): functional when the contrast's Holm p < alpha
in the harmful direction (more such failures; for accuracy, fewer right answers); "contrary" when it is
significant the other way; else not distinguishable from random heads of the same layers. A significant
contrast that does not hold against every draw alone is said to be so (it may hang on the draws). Power: the
smallest contrast detectable with 80% power at these items, at the family's strictest level alpha / tests
(Holm's first step), taking the observed mean squared per-item difference as the change rate
(`stats.detectable_effect`).

Storage: with `runs` (the CLI: OUT/runs), each condition is a run folder (`runs.open_run`; the masked heads
are part of its method identity), so a rerun skips the items and conditions already answered, and `fheads
report` can read them. Without it, answers stay in memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from ..core.heads import HeadMap
from ..core.rescale import masked
from ..models.architectures import locate
from ..models.loading import read_config
from ..utils import plotting
from ..utils.errors import UserError
from ..utils.files import atomic_write_text, check_writable
from ..utils.progress import file_logger
from . import figures
from .answering import answer_into_run
from .benchmarks import Benchmark, get_benchmark
from .engine import Decoding, HFBackend, answer_all
from .methods import Method, get_method
from .runs import open_run
from .stats import detectable_effect, holm, mcnemar, paired_bootstrap_test, paired_difference

CLASSES = ("perception", "reasoning")
SIGNATURE = {"perception": "perceptual", "reasoning": "drift"}  # the failure each class is named for
ACCURACY = "accuracy"
ALPHA, POWER = 0.05, 0.8
OUTCOME_TEXT = {ACCURACY: "accuracy", "perceptual": "perceptual errors", "location": "location errors",
                "drift": "reasoning drift", "malformed": "malformed answers"}


class Masked(Method):
    """Answers with the heads of a bool mask [layers, heads] silenced (gain 0). Not registered: it exists
    only for the masks `verify` draws."""

    def __init__(self, name: str, mask: torch.Tensor):
        self.name, self.mask = name, mask.bool().clone()
        super().__init__()

    def identity(self) -> dict:
        return {"method": self.name, "masked_heads": self.mask.nonzero().tolist()}

    def context(self, model):
        return masked(model, self.mask)

    def heads_rescaled(self, handle, batch):
        return [self.mask.float().mean().item()] * batch


@dataclass(frozen=True)
class Condition:
    name: str
    kind: str  # "vanilla", "class" (the class's own heads masked) or "random" (a control)
    head_class: str | None = None
    draw: int | None = None
    mask: torch.Tensor | None = None

    def method(self) -> Method:
        return get_method("vanilla") if self.mask is None else Masked(self.name, self.mask)


def class_mask(heads: HeadMap, head_class: str) -> torch.Tensor:
    if head_class not in CLASSES:
        raise UserError(f"the head classes are {', '.join(CLASSES)}, not {head_class!r}.")
    if heads.perception.dim() != 2:
        raise UserError(f"verify needs a static head map [layers, heads]; this one is per input "
                        f"{tuple(heads.perception.shape)}.")
    return (heads.perception if head_class == "perception" else heads.reasoning).bool()


def random_controls(heads: HeadMap, head_class: str, draws: int, seed: int = 0) -> list[torch.Tensor]:
    """`draws` masks [layers, heads], each holding, in every layer, as many heads as the map's `head_class`
    heads there, drawn uniformly without replacement from the layer's heads the map selects in neither class;
    seeded by `seed` and the class, so a rerun draws the same. The draws differ from each other while
    `distinct_controls` allows (a repeated draw would add answers but no information); beyond that they
    repeat."""
    if draws < 1:
        raise UserError(f"--draws must be at least 1, got {draws}.")
    own = class_mask(heads, head_class)
    free = ~(heads.perception.bool() | heads.reasoning.bool())
    counts = own.sum(-1).tolist()
    for layer, count in enumerate(counts):
        if count > free[layer].sum():
            raise UserError(f"layer {layer} has {count} {head_class} heads but only {int(free[layer].sum())} heads "
                            f"outside the map: too few for a random control of the same size. Verify a map that "
                            f"selects at most half of each layer's heads (tighten tau_perc / tau_reas).")
    rng = np.random.default_rng([seed, CLASSES.index(head_class)])
    distinct = distinct_controls(heads, head_class)
    masks: list[torch.Tensor] = []
    while len(masks) < draws:
        mask = torch.zeros_like(own)
        for layer, count in enumerate(counts):
            if count:
                pool = free[layer].nonzero().flatten().numpy()
                mask[layer, torch.as_tensor(rng.choice(pool, size=count, replace=False))] = True
        if len(masks) >= distinct or not any(torch.equal(mask, m) for m in masks):  # all distinct until then
            masks.append(mask)
    return masks


def distinct_controls(heads: HeadMap, head_class: str) -> int:
    """How many different random controls the class has: the ways to pick its count of heads in each layer
    among the layer's heads outside the map."""
    own = class_mask(heads, head_class).sum(-1).tolist()
    free = (~(heads.perception.bool() | heads.reasoning.bool())).sum(-1).tolist()
    return math.prod(math.comb(f, n) for n, f in zip(own, free))


def fixed_layers(heads: HeadMap, head_class: str) -> list[int]:
    """Layers where a random control has no choice: the class has as many heads there as the layer has heads
    outside the map, so every draw masks those same heads."""
    own = class_mask(heads, head_class).sum(-1)
    free = (~(heads.perception.bool() | heads.reasoning.bool())).sum(-1)
    return [layer for layer, (n, f) in enumerate(zip(own.tolist(), free.tolist())) if n and n == f]


def conditions(heads: HeadMap, draws: int = 3, seed: int = 0) -> list[Condition]:
    """Vanilla, then per class with heads: its heads masked and its `draws` random controls."""
    found = [Condition("vanilla", "vanilla")]
    for head_class in CLASSES:
        own = class_mask(heads, head_class)
        if not own.any():
            continue
        found.append(Condition(f"mask-{head_class}", "class", head_class, mask=own))
        found += [Condition(f"mask-{head_class}-random{k + 1}", "random", head_class, k + 1, mask)
                  for k, mask in enumerate(random_controls(heads, head_class, draws, seed))]
    return found


def verify_heads(model, heads: HeadMap, benchmark: Benchmark, examples: Sequence, decoding: Decoding = Decoding(), *,
                 random_draws: int = 3, seed: int = 0, batch_size: int = 8, progress: bool = False,
                 alpha: float = ALPHA, runs: str | Path | None = None, data: str | Path | None = None,
                 split: str | None = None, dtype: str = "auto", device_map: str | None = None,
                 log: Callable[[str], None] | None = None) -> dict:
    """Every condition (see the module) on the same `examples`, then `analyse`. `model` is a local model
    folder (loaded here in `dtype`), a (model, processor) pair or an `HFBackend`. With `runs` (a folder; the
    model must then be given as its folder), each condition's records are kept there as a run folder, so a
    rerun resumes; `data`, `split` and `dtype` enter those runs' identity as in `fheads eval`: give the ones
    the examples came from."""
    log = log or (lambda message: None)
    plan = conditions(heads, random_draws, seed)
    if runs is not None and not isinstance(model, (str, Path)):
        raise UserError("verify keeps run folders only for a model given as its folder (the runs are named by "
                        "its content); pass the folder, or no runs folder.")
    if decoding.sample:
        raise UserError("verify compares conditions item by item: use greedy decoding (no sampling).")
    examples = list(examples)
    if not examples:
        raise UserError(f"{benchmark.name}: no items to verify on (check --data, --split and --limit).")
    model_path = Path(model) if isinstance(model, (str, Path)) else None
    if model_path is not None:
        heads.check_fits_config(model_path)
        backend = HFBackend.load(model_path, dtype=dtype, device_map=device_map)
    else:
        backend = model if isinstance(model, HFBackend) else HFBackend(*model)
    heads.check_fits(locate(backend.model))
    records = {}
    for number, condition in enumerate(plan, 1):
        masked_heads = 0 if condition.mask is None else int(condition.mask.sum())
        log(f"condition {number}/{len(plan)}: {condition.name} ({_count(masked_heads, 'head')} masked)")
        method = condition.method()
        if runs is not None:
            run = open_run(runs, model_path, benchmark, method, data, split, dtype, decoding, backend=backend.name)
            answer_into_run(run, backend, benchmark, examples, method, decoding, batch_size, progress=progress)
            held = run.read()
            records[condition.name] = {e.id: held[e.id] for e in examples if e.id in held}
        else:
            answered = answer_all(backend, benchmark, examples, method, decoding, batch_size, progress=progress)
            records[condition.name] = {r["id"]: r for r in answered}
    result = analyse(records, plan, benchmark, alpha)
    result.update({"draws": random_draws, "seed": seed, "decoding": decoding.identity(),
                   "heads": head_summary(heads)})
    log(f"done: {result['items']} items, {result['family']['tests']} tests")
    return result


def head_summary(heads: HeadMap) -> dict:
    """Per class: how many heads, and how many in each layer that has some."""
    return {c: {"heads": int(class_mask(heads, c).sum()),
                "per_layer": {layer: n for layer, n in enumerate(class_mask(heads, c).sum(-1).tolist()) if n},
                "fixed_layers": fixed_layers(heads, c), "distinct_controls": distinct_controls(heads, c)}
            for c in CLASSES}


def outcomes_of(benchmark: Benchmark) -> list[str]:
    return [ACCURACY, *benchmark.failure_labels]


def outcome_values(rows: Sequence[dict], outcome: str) -> np.ndarray:
    """Per record: 1.0 where it was right (accuracy) or failed with the label `outcome`, else 0.0."""
    if outcome == ACCURACY:
        return np.array([float((r.get("score") or 0) >= 1) for r in rows])
    return np.array([float(r.get("failure") == outcome) for r in rows])


def analyse(records: dict[str, dict[str, dict]], plan: Sequence[Condition], benchmark: Benchmark,
            alpha: float = ALPHA) -> dict:
    """The report's numbers from each condition's records by id (see the module): rates, changes against
    vanilla, the class-vs-random contrasts, Holm over the family, and a verdict per class."""
    outcomes = outcomes_of(benchmark)
    names = [c.name for c in plan]
    usable = [{i for i, r in records[name].items() if r.get("error") is None} for name in names]
    order = list(records["vanilla"])
    ids = [i for i in order if all(i in u for u in usable)]
    if not ids:
        raise UserError(f"{benchmark.name}: no item was answered under every condition (all unusable?).")
    values = {name: {o: outcome_values([records[name][i] for i in ids], o) for o in outcomes} for name in names}
    vanilla = values["vanilla"]
    result = {"benchmark": benchmark.name, "items": len(ids), "outcomes": outcomes, "alpha": alpha,
              "unusable_items": len(records["vanilla"]) - len(ids), "conditions": {}, "classes": {}}
    tests = []
    for condition in plan:
        entry = {"kind": condition.kind, "class": condition.head_class, "draw": condition.draw,
                 "heads_masked": 0 if condition.mask is None else int(condition.mask.sum()),
                 "masked_heads": [] if condition.mask is None else condition.mask.nonzero().tolist(),
                 "rates": {o: float(values[condition.name][o].mean()) for o in outcomes}}
        if condition.kind != "vanilla":
            entry["vs_vanilla"] = {o: _interval(paired_difference(vanilla[o], values[condition.name][o]))
                                   for o in outcomes}
        if condition.kind == "class":
            for o in outcomes:
                test = mcnemar(vanilla[o] >= 1, values[condition.name][o] >= 1)
                entry["vs_vanilla"][o]["mcnemar"] = test
                tests.append(test)
        result["conditions"][condition.name] = entry
    for head_class in CLASSES:
        own = next((c for c in plan if c.kind == "class" and c.head_class == head_class), None)
        if own is None:
            result["classes"][head_class] = {"heads": 0, "status": "no heads",
                                             "verdict": f"the map has no {head_class} heads: nothing to verify."}
            continue
        draws = [c.name for c in plan if c.kind == "random" and c.head_class == head_class]
        pooled = {o: np.mean([values[d][o] for d in draws], axis=0) for o in outcomes}
        contrast = {}
        for o in outcomes:
            test = _interval(paired_bootstrap_test(pooled[o], values[own.name][o]))
            test["per_draw"] = [float((values[own.name][o] - values[d][o]).mean()) for d in draws]
            test["change_rate"] = float(((values[own.name][o] - pooled[o]) ** 2).mean())
            contrast[o] = test
            tests.append(test)
        result["classes"][head_class] = {
            "heads": int(own.mask.sum()), "condition": own.name, "draws": draws,
            "signature": SIGNATURE[head_class] if SIGNATURE[head_class] in outcomes else ACCURACY,
            "random_pooled": {"rates": {o: float(pooled[o].mean()) for o in outcomes},
                              "vs_vanilla": {o: _interval(paired_difference(vanilla[o], pooled[o]))
                                             for o in outcomes}},
            "contrast": contrast}
    for test, adjusted in zip(tests, holm([t["p"] for t in tests])):
        test["p_holm"] = adjusted
    result["family"] = {"tests": len(tests), "description": (
        "every test of this report: per class with heads and per outcome, the class-masked condition against "
        "vanilla (exact McNemar) and against its random controls (paired bootstrap); Holm's adjustment over "
        "them all controls the family-wise error rate")}
    for head_class, entry in result["classes"].items():
        if "contrast" in entry:
            entry.update(_verdict(head_class, entry, result, len(tests)))
    return result


def _interval(test: dict) -> dict:
    return {**test, "ci": list(test["ci"])}


def _verdict(head_class: str, entry: dict, result: dict, family: int) -> dict:
    """The class's status and its verdict in words, with the power of its signature contrast."""
    alpha, n = result["alpha"], result["items"]
    outcome = entry["signature"]
    test = entry["contrast"][outcome]
    harmful = test["mean"] < 0 if outcome == ACCURACY else test["mean"] > 0
    significant = test["p_holm"] < alpha
    text, points = OUTCOME_TEXT.get(outcome, f"'{outcome}' failures"), _points(abs(test["mean"]))
    interval = f"95% CI {_signed(test['ci'][0])} to {_signed(test['ci'][1])} points"
    if significant and harmful:
        status = "functional"
        moved = "lowers" if outcome == ACCURACY else "raises"
        verdict = (f"{head_class} heads are functional: masking them {moved} {text} by {points} points ({interval}) "
                   f"more than masking as many random heads from the same layers (Holm p = {test['p_holm']:.3g}).")
    elif significant:
        status = "contrary"
        moved = "raises" if outcome == ACCURACY else "lowers"
        verdict = (f"{head_class} heads matter, but not as their class says: masking them {moved} {text} by "
                   f"{points} points ({interval}) compared with as many random heads from the same layers (Holm p = "
                   f"{test['p_holm']:.3g}).")
    else:
        status = "not distinguishable"
        verdict = (f"{head_class} heads are not distinguishable from random heads of the same layers on {text}: "
                   f"{_signed(test['mean'])} points ({interval}, Holm p = {test['p_holm']:.3g}).")
    if significant and not _every_draw(test):
        verdict += (f" This does not hold against every draw alone ({_draws(test)} points): with so few draws it may "
                    "hang on which heads were drawn; more --draws would tell.")
    against = result["conditions"][entry["condition"]]["vs_vanilla"]
    if against[outcome]["mcnemar"]["a_only"] + against[outcome]["mcnemar"]["b_only"] == 0:
        verdict += f" Masking them changes no item's {text} against vanilla."
    moved_vanilla = [o for o, t in against.items() if t["mcnemar"]["p_holm"] < alpha]
    if status != "functional" and moved_vanilla:
        pooled = entry["random_pooled"]["vs_vanilla"]
        verdict += (" Against vanilla, masking them does change " + _and(
            [f"{OUTCOME_TEXT.get(o, o)} ({_signed(against[o]['mean'])} points, Holm p = "
             f"{against[o]['mcnemar']['p_holm']:.3g})" for o in moved_vanilla])
            + f"; as many random heads of those layers change {'it' if len(moved_vanilla) == 1 else 'them'} by "
            + _and([_signed(pooled[o]["mean"]) for o in moved_vanilla]) + " points (pooled draws).")
    others = [f"{OUTCOME_TEXT.get(o, o)} {_signed(t['mean'])} points (Holm p = {t['p_holm']:.3g}"
              + ("" if _every_draw(t) else f"; not against every draw: {_draws(t)}") + ")"
              for o, t in entry["contrast"].items() if o != outcome and t["p_holm"] < alpha]
    if others:
        verdict += " Other outcomes beyond random heads: " + "; ".join(others) + "."
    level = alpha / family
    detectable = detectable_effect(n, test["change_rate"], level, POWER)
    power = (f"At {n} items this contrast detects a difference of about {_points(detectable)} points with "
             f"{POWER:.0%} power (at alpha / {family} tests = {level:.2g}, the family's strictest level, and a "
             f"change rate of {test['change_rate']:.1%}: the mean squared per-item difference seen here).")
    return {"status": status, "verdict": verdict, "detectable": detectable, "power": power}


def _every_draw(test: dict) -> bool:
    """Whether the class differs from each draw alone in the direction it differs from them pooled."""
    return all(d * test["mean"] > 0 for d in test["per_draw"])


def _draws(test: dict) -> str:
    return ", ".join(_signed(d) for d in test["per_draw"])


def _points(share: float) -> str:
    return f"{100 * share:.1f}"


def _signed(share: float) -> str:
    return f"{100 * share:+.1f}"


# ---------------------------------------------------------------- the command: checks, runs, files

def verify(model: str | Path, heads: HeadMap | str | Path, bench: str, out: str | Path, *,
           data: str | Path | None = None, split: str | None = None, options: dict[str, str] | None = None,
           limit: int | None = None, draws: int = 3, seed: int = 0, alpha: float = ALPHA, batch_size: int = 8,
           decoding: Decoding = Decoding(), dtype: str = "auto", device_map: str | None = None,
           progress: bool = True) -> dict:
    """`fheads verify`: every request checked before the model loads, then `verify_heads` on the first `limit`
    items of the split, with each condition a run folder under OUT/runs (rerun to resume) and the lines of
    the run in OUT/log.txt; writes verify.md, verify.json and (with matplotlib) verify.png to `out`."""
    benchmark = get_benchmark(bench, **(options or {}))
    if data is None and benchmark.needs_data:
        raise UserError(f"{bench} needs --data: a local copy of the dataset (see the README).")
    if data is not None and not Path(data).exists():
        raise UserError(f"Data path {data} does not exist.")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must lie between 0 and 1, got {alpha}.")
    head_map = heads if isinstance(heads, HeadMap) else HeadMap.load(heads)
    read_config(model)
    head_map.check_fits_config(model)
    conditions(head_map, draws, seed)  # a map without room for its controls fails here, before the load
    check_writable(out)
    out = Path(out)
    examples = list(islice(benchmark.examples(data, split), limit))
    out.mkdir(parents=True, exist_ok=True)
    log = file_logger(out / "log.txt", progress)
    split_name = split or benchmark.default_split
    log(f"verify {model} with {heads if not isinstance(heads, HeadMap) else 'a head map'} on {bench} "
        f"({split_name}, {len(examples)} items, {draws} random draws, seed {seed})")
    result = verify_heads(model, head_map, benchmark, examples, decoding, random_draws=draws, seed=seed,
                          batch_size=batch_size, progress=progress, alpha=alpha, runs=out / "runs", data=data,
                          split=split, dtype=dtype, device_map=device_map, log=log)
    result.update({"model": str(model), "head_map": None if isinstance(heads, HeadMap) else str(heads),
                   "split": split_name, "data": None if data is None else str(data)})
    for path in write_verify(result, out):
        log(f"wrote {path}")
    return result


def write_verify(result: dict, out: Path) -> list[Path]:
    """verify.md, verify.json and (with matplotlib) verify.png in `out`; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(out / "verify.md", verify_markdown(result)),
               atomic_write_text(out / "verify.json", json.dumps(result, indent=1, default=str) + "\n")]
    if plotting.available():
        written.append(figures.verify_bars(result, out / "verify.png"))
    return written


def verify_markdown(result: dict) -> str:
    outcomes = result["outcomes"]
    where = f"{result['benchmark']}" + (f", {result['split']} split" if result.get("split") else "")
    lines = [f"# Are the heads functional? {where}, {result['items']} items", ""]
    if result.get("model"):
        lines += [f"Model: `{result['model']}`" + (f"; head map: `{result['head_map']}`" if result.get("head_map")
                                                   else ""), ""]
    heads = result.get("heads", {})
    counts = "; ".join(f"{c}: {_count(h['heads'], 'head')}" + (" (layer: count " + ", ".join(
        f"{layer}: {n}" for layer, n in h["per_layer"].items()) + ")" if h["per_layer"] else "")
                       for c, h in heads.items())
    if counts:
        lines += [f"Heads: {counts}.", ""]
    fixed = [f"{c} ({_count(len(h['fixed_layers']), 'layer', False)} {', '.join(map(str, h['fixed_layers']))})"
             for c, h in heads.items() if h.get("fixed_layers")]
    if fixed:
        lines += ["Controls without choice: in these layers the class holds as many heads as the layer has outside "
                  "the map, so every draw masks the same heads there: " + "; ".join(fixed) + ".", ""]
    few = [f"{c} ({h['distinct_controls']})" for c, h in heads.items()
           if h["heads"] and h.get("distinct_controls", math.inf) < result.get("draws", 0)]
    if few:
        lines += ["Fewer different controls exist than draws were asked for, so some draws repeat: "
                  + "; ".join(few) + ".", ""]
    lines += [f"Each class's heads are masked (gain 0 on their outputs) and compared with {result.get('draws', '?')} "
              f"random controls (seed {result.get('seed', '?')}): in each layer, as many heads as the class has "
              "there, drawn from the heads the map selects in neither class. Every condition answers the same "
              f"items with greedy decoding ({result.get('decoding', {}).get('max_new_tokens', '?')} new tokens at "
              f"most).", "", "## Verdicts", ""]
    lines += [f"- **{c}** ({e.get('status')}): {e['verdict']}" + (f" {e['power']}" if e.get("power") else "")
              for c, e in result["classes"].items()]
    lines += ["", "## Rates per condition", "", "| condition | heads masked | " + " | ".join(outcomes) + " |",
              "|---|---|" + "---|" * len(outcomes)]
    for name, c in result["conditions"].items():
        lines.append(f"| {name} | {c['heads_masked']} | " + " | ".join(_pct(c["rates"][o]) for o in outcomes) + " |")
        if c["kind"] == "random" and c["draw"] == len(result["classes"][c["class"]]["draws"]):
            pooled = result["classes"][c["class"]]["random_pooled"]
            lines.append(f"| {c['class']} random, pooled | {c['heads_masked']} | "
                         + " | ".join(_pct(pooled["rates"][o]) for o in outcomes) + " |")
    lines += ["", "## Change against vanilla", "",
              "Points, with the 95% paired bootstrap interval; the class-masked conditions with McNemar's exact p "
              "and its Holm-adjusted value.", "", "| condition | " + " | ".join(outcomes) + " |",
              "|---|" + "---|" * len(outcomes)]
    for name, c in result["conditions"].items():
        if c["kind"] == "vanilla":
            continue
        lines.append(f"| {name} | " + " | ".join(_change(c["vs_vanilla"][o]) for o in outcomes) + " |")
        if c["kind"] == "random" and c["draw"] == len(result["classes"][c["class"]]["draws"]):
            pooled = result["classes"][c["class"]]["random_pooled"]["vs_vanilla"]
            lines.append(f"| {c['class']} random, pooled | " + " | ".join(_change(pooled[o]) for o in outcomes) + " |")
    lines += ["", "## Each class against random heads of the same layers", "",
              "Class-masked minus the random controls (the draws pooled per item), in points, with the 95% paired "
              "bootstrap interval over items and its two-sided p; the last column is the difference against each "
              "draw alone (the interval is conditional on these draws).", "",
              "| class | outcome | class - random | p | Holm p | against each draw |", "|---|---|---|---|---|---|"]
    for head_class, e in result["classes"].items():
        for o, t in e.get("contrast", {}).items():
            mark = " (signature)" if o == e["signature"] else ""
            lines.append(f"| {head_class} | {o}{mark} | {_signed(t['mean'])} [{_signed(t['ci'][0])}, "
                         f"{_signed(t['ci'][1])}] | {t['p']:.3g} | {t['p_holm']:.3g} | "
                         + ", ".join(_signed(d) for d in t["per_draw"]) + " |")
    lines += ["", f"Tests: {result['family']['tests']} in one family: {result['family']['description']} "
              f"(alpha = {result['alpha']}). Random controls against vanilla are intervals only, not tests.", ""]
    if result.get("unusable_items"):
        lines += [f"Unusable items left out: {result['unusable_items']}.", ""]
    return "\n".join(lines)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count(n: int, noun: str, with_number: bool = True) -> str:
    word = noun if n == 1 else noun + "s"
    return f"{n} {word}" if with_number else word


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _change(test: dict) -> str:
    text = f"{_signed(test['mean'])} [{_signed(test['ci'][0])}, {_signed(test['ci'][1])}]"
    if "mcnemar" in test:
        text += f" p={test['mcnemar']['p']:.3g}, Holm {test['mcnemar']['p_holm']:.3g}"
    return text
