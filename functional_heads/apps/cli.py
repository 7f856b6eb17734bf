"""`fheads`: option parsing over the library. Each command calls one library function and prints its result.

What the user can fix (`UserError`) is one `error:` line, exit 2. Anything else is an internal error: one
line naming it and how to see the traceback (`fheads --debug ...` or FHEADS_DEBUG=1), exit 1. Ctrl-C exits
130 and says how to resume.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Only what the options' defaults and help texts read, from modules that load neither torch nor transformers
# (tests/test_cli.py checks), so `fheads --help` is quick; each command imports what it runs.
from ..evaluation.benchmarks import BENCHMARKS
from ..evaluation.benchmarks.shapes_generator import EVAL_SIZES
from ..evaluation.engine import DEFAULT_MAX_NEW_TOKENS
from ..models.dtypes import DTYPES
from ..tuning.settings import TuneSettings
from ..tuning.space import SearchSpace
from ..utils.errors import FunctionalHeadsWarning, UserError
from ..utils.files import atomic_write_text, check_new_file, check_writable
from ..utils.progress import library_bars

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Functional head identification and class-conditioned rescaling (arXiv 2510.10285).")
console = Console(soft_wrap=True, markup=False, highlight=False)  # our text, printed as it is
errors = Console(stderr=True)
_state = {"debug": False, "warned": set()}
# help texts from the registries and settings (packages that register more through entry points are found too)
DTYPE_HELP = f"{', '.join(DTYPES[:-1])} or {DTYPES[-1]}."
BENCH_HELP = f"{', '.join(BENCHMARKS)}, or a benchmark a package registers."
# The built-in methods' names: their registry loads torch with the methods, so the help lists them from here
# (tests/test_cli.py keeps this equal to the registry).
BUILTIN_METHODS = ("vanilla", "static", "dynamic", "perception-only", "reasoning-only", "vcd", "pai", "agla", "cgd")
METHOD_HELP = f"{', '.join(BUILTIN_METHODS)}, or a method a package registers."
# The vLLM options `--vllm-option` passes on (tests/test_vllm_engine.py keeps this equal to VLLMOptions' fields)
VLLM_OPTIONS = ("tensor_parallel_size", "gpu_memory_utilization", "kv_cache_memory_bytes", "max_model_len",
                "max_num_seqs", "enforce_eager")


def _debug_from_environment() -> bool:
    return os.environ.get("FHEADS_DEBUG", "") not in ("", "0")


def _print_version(asked: bool) -> None:
    if asked:
        console.print(f"functional-heads {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    """The installed distribution's version (the package's own `__version__` when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("functional-heads")
    except PackageNotFoundError:  # the package root, loaded before any of its modules (no upward import)
        return sys.modules[__name__.split(".")[0]].__version__


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
         version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                      help="Print the version and exit.")):
    _state["debug"] = debug or _debug_from_environment()


def guarded(resumable: bool = False):
    """Turn a command's failures into one line (or a traceback with --debug)."""
    def wrap(command):
        @functools.wraps(command)
        def run(*args, **kwargs):
            try:
                with _warning_lines(), library_bars():  # transformers' bars only in a terminal
                    return command(*args, **kwargs)
            except typer.Exit:
                raise
            except KeyboardInterrupt:
                errors.print("interrupted" + ("; finished items are saved: rerun the same command to resume."
                                              if resumable else "."))
                raise typer.Exit(130)
            except Exception as err:
                if _state["debug"]:
                    raise
                if isinstance(err, UserError):
                    errors.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
                    raise typer.Exit(2)
                errors.print(f"[red]internal error:[/red] {escape(f'{type(err).__name__}: {err}')} (rerun with "
                             "`fheads --debug ...` to see the traceback, and report it)", soft_wrap=True,
                             highlight=False)
                raise typer.Exit(1)
        return run
    return wrap


def _warn(message: str | None) -> None:
    """One `warning:` line, once per command."""
    if message and message not in _state["warned"]:
        _state["warned"].add(message)
        errors.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True, highlight=False)


@contextmanager
def _warning_lines():
    """While a command runs, the package's own warnings print as `warning:` lines (others as Python prints them)."""
    _state["warned"] = set()
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, FunctionalHeadsWarning):
                _warn(str(message))
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        warnings.simplefilter("default", FunctionalHeadsWarning)  # each distinct one, once
        yield


OVERWRITE_HELP = "Replace what is already at --out (otherwise an existing one is refused)."
ALLOW_FOLDED_HELP = ("Accept a model folder that `fheads export` wrote, although its weights already carry gains "
                     "(rescaling it again multiplies them).")


SETTING_HELP = {
    "perc_last_layer": "Last layer (from 0) of the perception band.",
    "reas_first_layer": "First layer (from 0) of the reasoning band.",
    "tau_perc": "Perception heads have S_v >= this.",
    "tau_reas": "Reasoning heads have S_v <= this.",
    "g_perc": "Gain of perception heads (the paper uses >= 1).",
    "g_reas": "Gain of reasoning heads.",
}


@app.command()
@guarded()
def calibrate(model: Path = typer.Option(..., help="Local model folder."),
              data: Path = typer.Option(..., help="JSONL with 'image' (path relative to the file) and 'prompt'; "
                                                 "rows whose image the model cannot take are skipped."),
              out: Path = typer.Option(Path("heads.json"), help="Where to write the head map."),
              preset: Optional[str] = typer.Option(None, help="Named settings, e.g. ocean-r1; flags below override."),
              settings: Optional[Path] = typer.Option(None, help="Settings JSON (a RescaleConfig, a settings.json "
                                                                 "with a 'config' entry, or a head map); flags below "
                                                                 "override."),
              perc_last_layer: Optional[int] = typer.Option(None, help=SETTING_HELP["perc_last_layer"]),
              reas_first_layer: Optional[int] = typer.Option(None, help=SETTING_HELP["reas_first_layer"]),
              tau_perc: Optional[float] = typer.Option(None, help=SETTING_HELP["tau_perc"]),
              tau_reas: Optional[float] = typer.Option(None, help=SETTING_HELP["tau_reas"]),
              g_perc: Optional[float] = typer.Option(None, help=SETTING_HELP["g_perc"]),
              g_reas: Optional[float] = typer.Option(None, help=SETTING_HELP["g_reas"]),
              allow_extreme_gains: bool = typer.Option(False, help="Accept gains outside 0.1 to 10 (still finite "
                                                                   "and > 0)."),
              batch_size: int = typer.Option(4, min=1),
              limit: Optional[int] = typer.Option(None, min=1, help="Only the first N usable rows."),
              dtype: str = typer.Option("auto", help=DTYPE_HELP),
              device_map: Optional[str] = typer.Option(None, help="e.g. auto or cuda:0."),
              overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
              allow_folded: bool = typer.Option(False, help=ALLOW_FOLDED_HELP)):
    """Measure S_v on calibration prompts and write the static head map (mean S_v over the prompts)."""
    from ..core.config import RescaleConfig
    from ..core.heads import calibrate_from_file

    cfg = RescaleConfig.resolve(preset, settings, perc_last_layer=perc_last_layer, reas_first_layer=reas_first_layer,
                                tau_perc=tau_perc, tau_reas=tau_reas, g_perc=g_perc, g_reas=g_reas,
                                allow_extreme_gains=allow_extreme_gains or None)
    check_new_file(out, overwrite)
    heads = calibrate_from_file(model, data, cfg, batch_size=batch_size, limit=limit, dtype=dtype,
                                device_map=device_map, allow_folded=allow_folded)
    heads.save(out)
    console.print(f"wrote {out}: {int(heads.perception.sum())} perception and {int(heads.reasoning.sum())} reasoning "
                  f"heads ({heads.share_selected:.1%} of {heads.num_layers * heads.num_heads}) from {heads.num_samples} "
                  "prompts")
    _warn(heads.share_warning())


@app.command()
@guarded()
def check(model: Path = typer.Option(..., help="Local model folder."),
          dtype: str = typer.Option("float32", help="float32 (exact comparisons), bfloat16, float16 or auto."),
          device_map: Optional[str] = typer.Option(None, help="e.g. auto or cuda:0."),
          trust_remote_code: bool = typer.Option(False, help="Let the folder's own modeling code run."),
          json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the measurements as JSON."),
          overwrite: bool = typer.Option(False, help="Replace an existing --json file.")):
    """Will the method work on this model? Measures S_v against eager attention, a padded batch against single
    prompts, and rescaling and folding, on two prompts about a generated image; says whether the folder is a
    folded export. Exit 1 if a check fails."""
    import json

    from ..core.check import check_checkpoint
    from ..core.heads import describe_folded, folded_export
    from ..models.loading import load_model, load_processor

    if json_out:
        check_new_file(json_out, overwrite, flag="--json")
    processor = load_processor(model, trust_remote_code=trust_remote_code)
    folded = folded_export(model)
    loaded = load_model(model, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code)
    result = check_checkpoint(loaded, processor)
    if folded is not None:
        console.print(f"folded export: gains {describe_folded(folded)} are already in its o_proj weights; do not "
                      "rescale it again (calibrate and rescale the original checkpoint)", soft_wrap=True)
    for line in result.lines():
        console.print(line)
    if json_out:
        atomic_write_text(json_out, json.dumps({**result.to_dict(), "folded": folded}, indent=1) + "\n")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
@guarded()
def inspect(heads: Path = typer.Argument(..., help="A head map written by `fheads calibrate`.")):
    """Print a head map: heads per layer, mean S_v per layer, share of heads selected."""
    from ..core.heads import HeadMap

    head_map = HeadMap.load(heads)
    cfg = head_map.config
    table = Table(title=f"{heads} ({head_map.model_type or 'unknown model'}, {head_map.num_layers} layers x "
                        f"{head_map.num_heads} heads, layers from 0)")
    for column in ("layer", "perception", "reasoning", "mean S_v", "perception heads", "reasoning heads"):
        table.add_column(column, justify="right" if column in ("layer", "perception", "reasoning", "mean S_v") else "left")
    for layer, (n_perc, n_reas) in enumerate(head_map.per_layer_counts()):
        mean = "" if head_map.ratios is None else f"{head_map.ratios[layer].mean():.3f}"
        table.add_row(str(layer), str(n_perc), str(n_reas), mean,
                      " ".join(map(str, head_map.perception[layer].nonzero().flatten().tolist())),
                      " ".join(map(str, head_map.reasoning[layer].nonzero().flatten().tolist())))
    console.print(table)
    total = head_map.num_layers * head_map.num_heads
    console.print(f"perception: {int(head_map.perception.sum())} heads (layers <= {cfg.perc_last_layer}, "
                  f"S_v >= {cfg.tau_perc}, gain {cfg.g_perc}); reasoning: {int(head_map.reasoning.sum())} heads "
                  f"(layers >= {cfg.reas_first_layer}, S_v <= {cfg.tau_reas}, gain {cfg.g_reas}); selected "
                  f"{int((head_map.perception | head_map.reasoning).sum())}/{total} = {head_map.share_selected:.1%}",
                  soft_wrap=True)
    _warn(head_map.inert_warning(str(heads)))
    _warn(head_map.share_warning())


@app.command()
@guarded()
def export(model: Path = typer.Option(..., help="Local model folder."),
           heads: Path = typer.Option(..., help="Head map from `fheads calibrate`."),
           out: Path = typer.Option(..., help="New (or empty) folder for the folded model."),
           dtype: str = typer.Option("auto", help=DTYPE_HELP),
           overwrite: bool = typer.Option(False, help="Replace an existing --out folder as a whole, once the new "
                                                      "one is complete."),
           allow_folded: bool = typer.Option(False, help=ALLOW_FOLDED_HELP)):
    """Fold the head map's gains into the o_proj weights and save a model that plain transformers loads."""
    from ..core.export import export_folded
    from ..core.heads import FOLDED_KEY, HEAD_MAP_FILE, HeadMap

    head_map = HeadMap.load(heads)
    export_folded(model, head_map, out, dtype=dtype, overwrite=overwrite, allow_folded=allow_folded)
    console.print(f"wrote {out}: o_proj columns of {int((head_map.gains != 1).sum())} heads scaled; it loads with "
                  f"plain transformers (its processor: fh.load_processor, or AutoProcessor with torchvision "
                  f"installed). The head map is kept as {HEAD_MAP_FILE}, the folded gains in config.json's "
                  f"{FOLDED_KEY}.", soft_wrap=True)


@app.command()
@guarded(resumable=True)
def demo(out: Optional[Path] = typer.Option(None, help="Write demo.md, demo.json, the figures and the run folders "
                                                       "here (rerun to resume)."),
         model: Optional[Path] = typer.Option(None, help="A shapes model folder with settings.json (default: bundled)."),
         limit: Optional[int] = typer.Option(None, min=8,
                                             help="Only the first N test items (at least one per family)."),
         method: list[str] = typer.Option([], help="Methods to compare (repeatable; default: vanilla, static, "
                                                   "dynamic, perception-only, reasoning-only)."),
         batch_size: int = typer.Option(64, min=1),
         reasoning: Optional[bool] = typer.Option(None, "--reasoning/--no-reasoning",
                                                  help="Also the bundled reasoning-tuned model and the premise on "
                                                       "both (default: on for the bundled base; needs vanilla among the methods).")):
    """The method end to end on the bundled models and the shapes benchmark (about 2 to 4 minutes on 2 CPU cores)."""
    from ..utils import plotting
    from .demo import METHODS, demo_markdown, run_demo

    if out is not None:
        check_writable(out)
        if not plotting.available():
            _warn(plotting.MISSING)
    report = run_demo(out=out, model_path=model, limit=limit, batch_size=batch_size, methods=method or METHODS,
                      reasoning=reasoning)
    console.print(demo_markdown(report), soft_wrap=True)
    if out is not None:
        console.print(f"wrote in {out}: {', '.join(report['written'])}", soft_wrap=True)


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} takes KEY=VALUE, got '{value}'.")
        pairs[key] = val
    return pairs


@app.command("eval")
@guarded(resumable=True)
def evaluate(model: Path = typer.Option(..., help="Local model folder."),
             bench: str = typer.Option(..., help=BENCH_HELP),
             method: str = typer.Option("vanilla", help=METHOD_HELP),
             out: Path = typer.Option(Path("runs"), help="Run folders go here (one per setting)."),
             data: Optional[Path] = typer.Option(None, help="Local copy: parquet file(s), a save_to_disk folder, "
                                                            "JSONL with images, or a folder `fheads data` wrote."),
             split: Optional[str] = typer.Option(None, help="Split to read (default: the benchmark's usual one)."),
             heads: Optional[Path] = typer.Option(None, help="Head map from `fheads calibrate` (rescaling methods)."),
             preset: Optional[str] = typer.Option(None, help="Settings for dynamic without a head map."),
             option: list[str] = typer.Option([], help="Benchmark option KEY=VALUE, e.g. annotations=PATH (chair)."),
             method_option: list[str] = typer.Option([], help="Method setting KEY=VALUE, e.g. alpha=1.0; agla "
                                                              "needs itm=PATH, cgd clip=PATH."),
             limit: Optional[int] = typer.Option(None, min=1, help="Only the first N items."),
             batch_size: int = typer.Option(8, min=1),
             max_new_tokens: int = typer.Option(DEFAULT_MAX_NEW_TOKENS, min=1),
             sample: bool = typer.Option(False, help="Sample instead of greedy decoding."),
             temperature: float = typer.Option(1.0, min=0.0), seed: int = typer.Option(0),
             judge_url: Optional[str] = typer.Option(None, help="OpenAI-compatible API base URL for LLM answer "
                                                                "extraction (off by default; key: OPENAI_API_KEY)."),
             judge_model: Optional[str] = typer.Option(None, help="The judge's model name."),
             dtype: str = typer.Option("auto", help=DTYPE_HELP),
             device_map: Optional[str] = typer.Option(None, help="e.g. auto or cuda:0 (under a launcher: each "
                                                                 "process's GPU, LOCAL_RANK's, by default)."),
             gpus_per_process: Optional[int] = typer.Option(None, min=1, help="Under a launcher, spread each "
                                                            "process's model over K GPUs: LOCAL_RANK r gets GPUs "
                                                            "r*K..r*K+K-1."),
             order: str = typer.Option("length", help="length: batch prompts of similar length together; file: "
                                                      "the data's order."),
             allow_folded: bool = typer.Option(False, help=ALLOW_FOLDED_HELP),
             engine: str = typer.Option("hf", help="hf: transformers' generate; vllm: a vLLM engine (the methods "
                                                   "that fold into the weights: vanilla, static, perception-only, "
                                                   "reasoning-only). Their runs are kept apart."),
             vllm_option: list[str] = typer.Option([], help="vLLM engine setting KEY=VALUE (--engine vllm): "
                                                            f"{', '.join(VLLM_OPTIONS)}.")):
    """Run one method on one benchmark; resumable (rerun the same command to continue). Data-parallel under
    torchrun or accelerate launch: each process answers its share and writes its own results file
    (--engine hf; a vLLM engine spreads over GPUs itself, with --vllm-option tensor_parallel_size=N)."""
    from ..evaluation.api import evaluate as evaluate_run
    from ..evaluation.benchmarks import get_benchmark
    from ..evaluation.engine import LONG_PROMPT, Decoding
    from ..evaluation.judge import Judge
    from ..evaluation.runs import run_records

    if (judge_url is None) != (judge_model is None):
        raise UserError("An LLM judge needs both --judge-url and --judge-model.")
    run = evaluate_run(model, bench, method, out=out, data=data, split=split, options=_pairs(option, "--option"),
                       heads=heads, preset=preset, method_options=_pairs(method_option, "--method-option"),
                       limit=limit, batch_size=batch_size,
                       decoding=Decoding(max_new_tokens, sample, temperature, seed),
                       judge=Judge(judge_url, judge_model) if judge_url else None, dtype=dtype, device_map=device_map,
                       gpus_per_process=gpus_per_process, order=order, allow_folded=allow_folded, engine=engine,
                       vllm_options=_pairs(vllm_option, "--vllm-option"))
    records = run_records(run.folder)  # every process's, as written so far
    usable = [r for r in records.values() if r.get("error") is None]
    summary = get_benchmark(bench, **_pairs(option, "--option")).metrics(usable)
    who = f"{run.shard.label} done; the run holds so far: " if run.shard.label else ""
    console.print(f"{who}{run.folder}: {len(records)} items ({len(records) - len(usable)} unusable); accuracy "
                  f"{summary.get('accuracy') or 0:.1%}", soft_wrap=True)
    unusable = [r for r in records.values() if r.get("error") is not None and LONG_PROMPT not in str(r["error"])]
    if unusable:  # (prompts longer than the context had their own warning)
        _warn(f"{len(unusable)} unusable items were set aside (their 'error' in the run's results says why), "
              f"e.g. {unusable[0]['error']}")


@app.command()
@guarded(resumable=True)
def tune(model: Path = typer.Option(..., help="Local model folder."),
         bench: str = typer.Option(..., help="Benchmark to tune on (see `fheads eval --help`)."),
         out: Path = typer.Option(Path("tune"), help="tune.json, tune.md, settings.json, heads.json, figures, "
                                                     "log.txt and (by default) the study's SQLite file go here."),
         data: Optional[Path] = typer.Option(None, help="Local copy of the benchmark (as for `fheads eval`)."),
         split: str = typer.Option("dev", help="The dev split: searched and confirmed on. A test split (test*, the "
                                               "benchmark's evaluation split, all) is refused."),
         allow_test_split: bool = typer.Option(False, help="Tune (or calibrate) on a test split anyway: its "
                                                           "results are then biased upwards."),
         option: list[str] = typer.Option([], help="Benchmark option KEY=VALUE."),
         trials: int = typer.Option(TuneSettings.trials, min=1,
                                    help="Finished trials of the whole study (all workers, all resumes)."),
         storage: Optional[str] = typer.Option(None, help="Optuna storage: sqlite:///FILE (default OUT/study.db), "
                                                          "postgresql://... or mysql://... for many machines, or "
                                                          "journal:FILE. Workers on one storage share the study."),
         study: str = typer.Option("fheads-tune", help="Study name inside the storage."),
         calib_split: Optional[str] = typer.Option(None, help="Measure S_v on this split of the benchmark "
                                                              "(default: the search part's items)."),
         calib_data: Optional[Path] = typer.Option(None, help="Or on a JSONL of {'image', 'prompt'} rows."),
         calib_items: int = typer.Option(64, min=1, help="Calibration items."),
         confirm_fraction: float = typer.Option(TuneSettings.confirm_fraction,
                                                help="Share of the dev split held out for confirmation."),
         detect: Optional[float] = typer.Option(None, help="The smallest gain worth having, in accuracy points "
                                                           f"(default {100 * TuneSettings.min_effect:g}): the "
                                                           "confirmation is sized to confirm it with power 0.8 at "
                                                           "--alpha, from how often answers change on the search "
                                                           "part."),
         min_effect: Optional[float] = typer.Option(None, hidden=True, help="--detect as a share (0.05 = 5 "
                                                                             "points): its former name."),
         alpha: float = typer.Option(TuneSettings.alpha, help="Significance level of the confirmation test."),
         pruner: str = typer.Option(TuneSettings.pruner, help="halving (successive halving), hyperband or none."),
         min_items: int = typer.Option(TuneSettings.min_items, min=1,
                                       help="Items of the first rung; rungs double up to the search part."),
         max_share: float = typer.Option(SearchSpace.max_share,
                                         help="Largest share of all heads one class may select."),
         allow_damping: bool = typer.Option(False, help="Let gains go below 1 (down to 0.6)."),
         per_layer_gains: bool = typer.Option(SearchSpace.per_layer_gains,
                                              help="One gain per layer instead of one per class."),
         query_tokens: int = typer.Option(SearchSpace.query_tokens, min=1,
                                          help="Average S_v over the last K prompt tokens, not i* alone."),
         heartbeat: int = typer.Option(TuneSettings.heartbeat, min=1,
                                       help="Seconds between a trial's heartbeats (database storages)."),
         seed: int = typer.Option(TuneSettings.seed), batch_size: int = typer.Option(8, min=1),
         max_new_tokens: int = typer.Option(DEFAULT_MAX_NEW_TOKENS, min=1),
         dtype: str = typer.Option("auto", help=DTYPE_HELP),
         device_map: Optional[str] = typer.Option(None, help="e.g. auto or cuda:0 (--engine vllm: only for the "
                                                             "transformers model that measures S_v)."),
         engine: str = typer.Option("hf", help="hf: transformers' generate; vllm: one vLLM engine per worker for "
                                               "the whole study, each trial's gains set in it. Their studies are "
                                               "kept apart."),
         vllm_option: list[str] = typer.Option([], help="vLLM engine setting KEY=VALUE (--engine vllm): "
                                                        f"{', '.join(VLLM_OPTIONS)}.")):
    """Choose the settings with an Optuna study on the dev split, confirm the best one on held-out dev items,
    and write it as settings.json and heads.json (resumable; run it on several workers to share the study)."""
    from ..evaluation.engine import Decoding
    from ..tuning.study import tune as run_study
    from ..utils import plotting

    if not plotting.available():
        _warn(plotting.MISSING)
    settings = TuneSettings(trials=trials, confirm_fraction=confirm_fraction, min_effect=_effect(detect, min_effect),
                            alpha=alpha, pruner=pruner, min_items=min_items, seed=seed, heartbeat=heartbeat)
    space = {"max_share": max_share, "per_layer_gains": per_layer_gains, "query_tokens": query_tokens,
             **({"gain_low": 0.6} if allow_damping else {})}
    summary = run_study(model, bench, out=out, data=data, split=split, options=_pairs(option, "--option"),
                        calib_split=calib_split, calib_data=calib_data, calib_items=calib_items, settings=settings,
                        space_options=space, storage=storage, study_name=study,
                        decoding=Decoding(max_new_tokens=max_new_tokens), batch_size=batch_size, dtype=dtype,
                        device_map=device_map, allow_test_split=allow_test_split, engine=engine,
                        vllm_options=_pairs(vllm_option, "--vllm-option"))
    console.print(f"{summary['verdict']}.", soft_wrap=True)
    console.print(f"wrote {out}/tune.md, tune.json, settings.json (for --settings) and heads.json (for --heads)",
                  soft_wrap=True)


def _effect(detect: float | None, min_effect: float | None) -> float:
    """The gain to detect, as a share: --detect in points, or --min-effect (its former name) as a share."""
    if detect is not None and min_effect is not None:
        raise UserError("Give --detect (points) or --min-effect (the same gain as a share), not both.")
    if detect is not None and not 0 < detect < 100:
        raise UserError(f"--detect {detect:g}: give the smallest gain worth having in accuracy points, above 0 and "
                        "below 100 (e.g. --detect 2).")
    return detect / 100 if detect is not None else TuneSettings.min_effect if min_effect is None else min_effect


@app.command()
@guarded(resumable=True)
def verify(model: Path = typer.Option(..., help="Local model folder."),
           heads: Path = typer.Option(..., help="Head map from `fheads calibrate`."),
           bench: str = typer.Option(..., help=BENCH_HELP),
           out: Path = typer.Option(..., help="verify.md, verify.json, verify.png, log.txt and the run folders "
                                              "(runs/, one per condition) go here; rerun to resume."),
           data: Optional[Path] = typer.Option(None, help="Local copy of the benchmark (as for `fheads eval`)."),
           split: Optional[str] = typer.Option(None, help="Split to read (default: the benchmark's usual one); "
                                                          "keep the test split for the final results."),
           option: list[str] = typer.Option([], help="Benchmark option KEY=VALUE."),
           limit: Optional[int] = typer.Option(None, min=1, help="Only the first N items."),
           draws: int = typer.Option(3, min=1, help="Random controls per class."),
           seed: int = typer.Option(0, help="Seed of the random controls."),
           alpha: float = typer.Option(0.05, help="Family-wise significance level of the verdicts (Holm)."),
           batch_size: int = typer.Option(8, min=1),
           max_new_tokens: int = typer.Option(DEFAULT_MAX_NEW_TOKENS, min=1),
           dtype: str = typer.Option("auto", help=DTYPE_HELP),
           device_map: Optional[str] = typer.Option(None, help="e.g. auto or cuda:0.")):
    """Are the heads functional? Masks each class of heads and, as controls, as many random heads of the same
    layers, on the same items; compares accuracy and the benchmark's failure rates (greedy decoding)."""
    from ..evaluation.engine import Decoding
    from ..evaluation.verify import verify as run_verify
    from ..evaluation.verify import verify_markdown
    from ..utils import plotting

    check_writable(out)
    if not plotting.available():
        _warn(plotting.MISSING)
    result = run_verify(model, heads, bench, out, data=data, split=split, options=_pairs(option, "--option"),
                        limit=limit, draws=draws, seed=seed, alpha=alpha, batch_size=batch_size,
                        decoding=Decoding(max_new_tokens=max_new_tokens), dtype=dtype, device_map=device_map)
    console.print(verify_markdown(result), soft_wrap=True)
    console.print(f"wrote {out}/verify.md, verify.json" + (", verify.png" if plotting.available() else "")
                  + ", log.txt and runs/", soft_wrap=True)


@app.command()
@guarded()
def report(runs: Path = typer.Argument(Path("runs"), help="Folder of run folders written by `fheads eval`."),
           out: Optional[Path] = typer.Option(None, help="Write report.md, report.json and report.png here."),
           common_items: bool = typer.Option(False, help="Compare on the items every run answered.")):
    """Compare the methods of each benchmark on the same items: metrics, intervals, paired tests, latency."""
    from ..evaluation.api import report as build
    from ..evaluation.report import report_markdown
    from ..utils import plotting

    if out is not None:
        check_writable(out)
    result = build(runs, out=out, common_items=common_items)
    console.print(report_markdown(result), soft_wrap=True)
    if out is not None:
        console.print(f"wrote {out}/report.md, report.json" + (", report.png" if plotting.available() else
                                                                 f" ({plotting.MISSING})"))


data_app = typer.Typer(help="Benchmark data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("shapes")
@guarded()
def data_shapes(out: Path = typer.Option(..., help="Folder for the images and the JSONL files."),
                split: list[str] = typer.Option(list(EVAL_SIZES), help="Splits to write (repeatable; also train)."),
                n: Optional[int] = typer.Option(None, min=1, help="Items per split (default: the split's size).")):
    """Write the synthetic shapes benchmark: PNG images and one JSONL file per split."""
    from ..evaluation.benchmarks import shapes_generator

    check_writable(out)
    for name in split:
        path = shapes_generator.write_split(name, out, n if n is not None or name != "train" else 10000)
        console.print(f"wrote {path}")
    console.print(f"`fheads eval --bench shapes --data {out} --split NAME` reads this folder.")


if __name__ == "__main__":
    app()
