"""Tune throughput: trials per minute of `fheads tune` with `--engine hf` and `--engine vllm` on the same study settings
(same model, data, search and confirmation parts, trials, pruner, seed, decoding), in one run, each study in its own
temporary folder and its own process.

    python benchmarks/tune_throughput.py [--trials 30] [--items 200] [--pruner halving] [--detect 5] [--batch-size 64]
        [--max-new-tokens 64] [--dtype float32] [--model PATH] [--score parity|shapes] [--threads T]
        [--vllm-option KEY=VALUE ...] [--out tune_throughput.json]

Each study is `tuning.tune` (what `fheads tune` runs) on a shapes dev split of --items items (half searched, half
held out) and 64 calibration items, written to a fresh folder. Its time is cut at its trials' own start and end
times (the study's records): set-up (processor, S_v on the calibration items, the model load or the engine's start,
vanilla on the search part), the trial phase (first trial's start to last trial's end: `trials_seconds` in
tune.json), and the rest (the best setting's confirmation on the held-out part, the report and figures). Trials per
minute and items answered per minute are of the trial phase; the whole call is reported beside them.

The model: by default the testbed's random-weight Qwen2.5-VL with heads of 32 (vLLM's CPU attention takes no
smaller; the bundled models' heads are 16), built into the run's folder. Its answers mean nothing, so by default
(`--score parity`) an answer is scored by its exact text (right when a hash of it is even, as tests/test_tuning.py
does): every trial's value then depends on every answer, and identical values in the two studies say the engines
gave the same answers. `--model PATH --score shapes` runs a trained model with the benchmark's own score.

The two studies are compared trial by trial (state, value, parameters and per-item scores), with vanilla's scores,
the confirmation and the result. Prints a markdown table with the ratios vLLM / transformers measured in the same
run, and writes the raw figures to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from functional_heads.utils.files import atomic_write_text  # noqa: E402

STUDY = "fheads-tune"
CALIBRATION_ITEMS = 64


def register_parity() -> str:
    """The shapes benchmark scored by the answer's exact text (right when a hash of it is even)."""
    from functional_heads.evaluation.benchmarks import BENCHMARKS, register_benchmark
    from functional_heads.evaluation.benchmarks.base import Scored
    from functional_heads.evaluation.benchmarks.shapes import Shapes
    from functional_heads.evaluation.seeding import text_seed

    class ShapesParity(Shapes):
        name = "shapes-parity"

        def score(self, example, output):
            return Scored(output, float(text_seed(output) % 2 == 0), None)

    if ShapesParity.name not in BENCHMARKS.names():
        register_benchmark(ShapesParity)
    return ShapesParity.name


def one_study(config: dict) -> dict:
    """Run one study (in this process) and time its phases."""
    import torch

    from functional_heads.evaluation.engine import Decoding
    from functional_heads.tuning import TuneSettings, tune

    if config["threads"]:
        torch.set_num_threads(config["threads"])
    bench = register_parity() if config["score"] == "parity" else "shapes"
    settings = TuneSettings(trials=config["trials"], pruner=config["pruner"], min_items=config["min_items"],
                            seed=config["seed"], min_effect=config["detect"] / 100)
    began, start = datetime.now(), time.perf_counter()
    summary = tune(config["model"], bench, out=config["out"], data=config["data"], split="dev", calib_split="calib",
                   calib_items=CALIBRATION_ITEMS, settings=settings, batch_size=config["batch_size"],
                   decoding=Decoding(max_new_tokens=config["max_new_tokens"]), dtype=config["dtype"],
                   engine=config["engine"], vllm_options=config["vllm_options"] or None, progress=False)
    whole = time.perf_counter() - start
    trials = stored_trials(Path(config["out"]))
    first = min(datetime.fromisoformat(t["start"]) for t in trials["trials"] if t["start"])
    last = max(datetime.fromisoformat(t["end"]) for t in trials["trials"] if t["end"])
    finished = sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials["trials"])
    trial_s = (last - first).total_seconds()  # tune.json's trials_seconds when every trial finished
    return {"engine": config["engine"], "whole_s": whole, "setup_s": (first - began).total_seconds(),
            "trials_s": trial_s, "after_s": whole - (last - began).total_seconds(), "finished_trials": finished,
            "trials_per_min": finished / trial_s * 60, "items_answered": summary["items_evaluated_this_worker"],
            "items_per_min": summary["items_evaluated_this_worker"] / trial_s * 60,
            "counts": summary["counts"], "verdict": summary["verdict"], "confirmation": summary["confirmation"],
            "result": summary["result"], "threads": torch.get_num_threads(), **trials}


def stored_trials(out: Path) -> dict:
    """Each trial's number, state, value, parameters, per-item scores and times, and vanilla's scores, as the
    study holds them."""
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'study.db'}")
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "scores": t.user_attrs.get("scores"), "heads_key": t.user_attrs.get("heads_key"),
               "start": t.datetime_start and t.datetime_start.isoformat(),
               "end": t.datetime_complete and t.datetime_complete.isoformat()} for t in study.get_trials()]
    return {"trials": trials, "vanilla_search": study.user_attrs["vanilla_search"]}


def compare_studies(first: dict, second: dict) -> dict:
    """Trial by trial: how many have the same state, value, parameters and per-item scores in both studies (and
    the first trial that does not), whether vanilla's scores, the confirmation and the result are the same."""
    keys = ("state", "value", "params", "scores")
    pairs = list(zip(first["trials"], second["trials"]))
    same = [all(a[k] == b[k] for k in keys) for a, b in pairs]
    return {"trials": max(len(first["trials"]), len(second["trials"])), "identical": sum(same),
            "first_different": next((a["number"] for (a, _), ok in zip(pairs, same) if not ok),
                                    None if len(first["trials"]) == len(second["trials"]) else len(pairs)),
            "same_values": [a["value"] for a, _ in pairs] == [b["value"] for _, b in pairs]
            and len(first["trials"]) == len(second["trials"]),
            "vanilla_identical": first["vanilla_search"] == second["vanilla_search"],
            "confirmation_identical": first["confirmation"] == second["confirmation"],
            "result_identical": first["result"] == second["result"]}


def parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --vllm-option {pair}: expected KEY=VALUE.")
        options[key] = value
    return options


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--items", type=int, default=200, help="dev items (half searched, half held out)")
    parser.add_argument("--pruner", default="halving")
    parser.add_argument("--min-items", type=int, default=25, help="the first rung (fheads tune's --min-items)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detect", type=float, default=5.0, help="fheads tune's --detect (points)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--model", type=Path, help="a model folder (default: the testbed's tiny model, heads of 32)")
    parser.add_argument("--score", choices=["parity", "shapes"],
                        help="parity: by the answer's exact text (default without --model); shapes: the benchmark's")
    parser.add_argument("--threads", type=int, help="torch threads of transformers (default: torch's choice)")
    parser.add_argument("--vllm-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--engines", nargs="+", choices=["hf", "vllm"], default=["hf", "vllm"])
    parser.add_argument("--out", type=Path, default=Path("tune_throughput.json"))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # a study's settings (JSON), run here
    args = parser.parse_args(argv)
    if args.child:
        config = json.loads(args.child.read_text())
        atomic_write_text(config["result"], json.dumps(one_study(config)) + "\n")
        return {}
    if "vllm" in args.engines:
        from functional_heads.evaluation.vllm_engine import require_vllm
        from functional_heads.utils.errors import FunctionalHeadsError

        try:
            require_vllm()
        except FunctionalHeadsError as err:
            raise SystemExit(f"error: {' '.join(str(err).split())}") from None
    with tempfile.TemporaryDirectory(prefix="tune_throughput_") as work:
        return run(args, Path(work))


def run(args, work: Path) -> dict:
    from functional_heads.evaluation.benchmarks import shapes_generator

    data = work / "data"
    shapes_generator.write_split("dev", data, args.items)
    shapes_generator.write_split("calib", data, CALIBRATION_ITEMS)
    model = args.model
    if model is None:
        from functional_heads.testbed.tiny import save_tiny_qwen2_5_vl

        model = save_tiny_qwen2_5_vl(work / "model", head_dim=32, init_std=0.1)  # answers that vary with the item
    score = args.score or ("parity" if args.model is None else "shapes")
    settings = {"model": str(model), "data": str(data), "trials": args.trials, "pruner": args.pruner,
                "min_items": args.min_items, "seed": args.seed, "detect": args.detect, "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens, "dtype": args.dtype, "score": score, "threads": args.threads}
    result = {"settings": {**settings, "items": args.items, "calibration_items": CALIBRATION_ITEMS,
                           "model": str(args.model) if args.model else "testbed tiny Qwen2.5-VL, heads of 32"},
              "studies": {}}
    for engine in args.engines:
        config = {**settings, "engine": engine, "out": str(work / engine), "result": str(work / f"{engine}.json"),
                  "vllm_options": parse_options(args.vllm_option) if engine == "vllm" else {}}
        (work / f"{engine}.config.json").write_text(json.dumps(config))
        print(f"{engine}: a {args.trials}-trial study ...", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--child", str(work / f"{engine}.config.json")],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
        if done.returncode != 0:
            raise SystemExit(f"error: the {engine} study failed (exit {done.returncode}; its output is above).")
        study = json.loads(Path(config["result"]).read_text())
        study["process_s"] = time.perf_counter() - start  # with Python's start and the imports
        result["studies"][engine] = study
        print(json.dumps({k: v for k, v in study.items() if k not in ("trials", "vanilla_search", "confirmation",
                                                                        "result")}), flush=True)
    if len(result["studies"]) == 2:
        hf, vllm = result["studies"]["hf"], result["studies"]["vllm"]
        result["comparison"] = compare_studies(hf, vllm)
        result["ratios"] = {key: vllm[key] / hf[key] for key in ("trials_per_min", "items_per_min", "whole_s")}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print_table(result)
    return result


def print_table(result: dict) -> None:
    s = result["settings"]
    print(f"\n{s['trials']}-trial studies ({s['pruner']} pruning, seed {s['seed']}) on {s['items']} shapes dev items "
          f"(half searched), {s['model']} in {s['dtype']}, batch {s['batch_size']}, {s['max_new_tokens']} new tokens, "
          f"score {s['score']}")
    print("| engine | whole call s | set-up s | trial phase s | confirmation and report s | trials/min | "
          "items answered/min |\n|---|---|---|---|---|---|---|")
    names = {"hf": "transformers (--engine hf)", "vllm": "vLLM (--engine vllm)"}
    for key, row in result["studies"].items():
        print(f"| {names[key]} | {row['whole_s']:.1f} | {row['setup_s']:.1f} | {row['trials_s']:.1f} | "
              f"{row['after_s']:.1f} | {row['trials_per_min']:.1f} | {row['items_per_min']:.0f} |")
    if "ratios" in result:
        r, c = result["ratios"], result["comparison"]
        print(f"| vLLM / transformers | {r['whole_s']:.2f} | | | | {r['trials_per_min']:.2f} | "
              f"{r['items_per_min']:.2f} |")
        where = "" if c["first_different"] is None else f" (the first that differs: trial {c['first_different']})"
        print(f"\nTrials: {c['identical']} of {c['trials']} identical in state, value, parameters and per-item "
              f"scores{where}; vanilla's scores {'identical' if c['vanilla_identical'] else 'differ'}; confirmation "
              f"{'identical' if c['confirmation_identical'] else 'differs'}; result "
              f"{'identical' if c['result_identical'] else 'differs'}.")


if __name__ == "__main__":
    main()
