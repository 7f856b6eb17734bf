"""`fheads tune`: the method's settings chosen by an Optuna study on a dev split, then confirmed on held-out
dev items with a paired test against vanilla. A test split is refused unless asked for (`reads_test_split`).

The dev split is shuffled once (seeded) and divided into a search part and a confirmation part. S_v is
measured once per study on the calibration items and kept in the study itself (a user attribute, so every
worker on every machine reads the same values); a trial only re-identifies heads (`SearchSpace.suggest`)
and evaluates (`objective`). The best trial is then evaluated once on the confirmation part
(`confirmation`), and the study's files are written (`report`).

Several workers on one storage (the same command on several GPUs or machines) share the study: each runs
trials until the study holds `trials` finished ones. A worker killed mid-trial leaves a RUNNING trial; an
RDB storage's heartbeat (any host), or a dead process id (same host, any storage), fails it and its
parameters are queued again (`storage`).

With `engine="vllm"` the trials and the confirmation answer on one vLLM engine per worker, started once
for the whole study: each trial's gains go into the running engine's o_proj weights (only the layers whose
gains change; `vllm_engine.VLLMBackend.set_gains`), and vanilla puts its original tensors back bit for bit.
S_v is still measured by transformers (the probe hooks its attention), once per study, with that model freed
before the engine starts. The engine is part of the study's identity, with the precision (`dtype`): a
transformers study and a vLLM study of the same settings are two studies.

This module wires these steps: it reads and checks the inputs before any work, opens the study, loads the
model and runs the steps in order.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from ..core.config import RescaleConfig
from ..core.heads import CalibrationItem, calibrate, file_calibration_items, usable_calibration
from ..evaluation.benchmarks import Example, get_benchmark
from ..evaluation.benchmarks.base import ALL_SPLITS
from ..evaluation.engine import Decoding, HFBackend, check_engine
from ..evaluation.seeding import text_seed
from ..evaluation.vllm_engine import VLLMBackend, VLLMOptions, check_runnable, require_vllm
from ..models.architectures import attention_layer_count, locate
from ..models.identity import model_fingerprint
from ..models.loading import load_model, load_processor, prompt_batches, read_config, to_model_device
from ..utils.errors import FunctionalHeadsWarning, UserError
from ..utils.files import check_writable
from ..utils.imports import requires
from ..utils.progress import file_logger
from ..utils.progress import progress as progress_lines
from . import report
from .confirmation import choose_candidate, plan, search_change_rate
from .logs import quiet_optuna
from .objective import Scorer, StudyWorker, run_trials
from .settings import TuneSettings
from .space import SearchSpace
from .storage import cached, is_finished, join_study
from .summary import summarize, trial_row


def divide(examples: list, confirm_fraction: float, seed: int) -> tuple[list, list]:
    """(search part, confirmation part) of the dev items: one seeded shuffle, then the tail held out."""
    order = sorted(range(len(examples)), key=lambda i: text_seed(f"{seed}/{examples[i].id}"))
    n_confirm = round(len(examples) * confirm_fraction)
    shuffled = [examples[i] for i in order]
    return shuffled[:len(shuffled) - n_confirm], shuffled[len(shuffled) - n_confirm:]


def check_sizes(n_search: int, n_confirm: int, settings: TuneSettings) -> None:
    """Raise before any work if the search part is too small to search, or nothing is held out to confirm on.
    A held-out part too small for the gain sought is not refused: `confirmation.plan` warns and the
    confirmation reports the power it had."""
    if n_confirm < 1:
        raise UserError(f"No dev item is held out for confirmation ({n_search + n_confirm} items, --confirm-fraction "
                        f"{settings.confirm_fraction}): use a larger dev split or a larger --confirm-fraction.")
    if n_search < settings.min_items:
        raise UserError(f"The search part holds {n_search} items, fewer than the first rung's --min-items "
                        f"{settings.min_items}: use a larger dev split or a smaller --confirm-fraction.")


def plan_before_search(study, n_confirm: int, settings: TuneSettings) -> dict:
    """The confirmation's size as known before this worker searches (`confirmation.plan`): at the change rate of
    the best trial so far when the study has one (a resumed or joined study), else the fewest items any rate
    could need."""
    baseline = study.user_attrs.get("vanilla_search")
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    best = choose_candidate(rows)
    rate = (search_change_rate(study, baseline, best["heads_key"]) if baseline and best and best["value"] > 0
            else None)
    return plan(n_confirm, settings, rate, f"of trial {best['number']}, the best so far, on the search part"
                if rate is not None else "")


def reads_test_split(benchmark, split: str) -> str | None:
    """Why tuning on `split` would read the split results are reported on (None if it would not): a split
    named test (test, testmini, test-dev), the benchmark's own evaluation split, whatever its name (CHAIR's
    and MMStar's val), or every split at once."""
    if split == ALL_SPLITS:
        return "every split of the data, the test split included"
    if split == benchmark.default_split:
        return f"{benchmark.name}'s evaluation split (the one `fheads eval` reports)"
    if split.lower().startswith("test"):
        return "a test split"
    return None


def refuse_test_split(benchmark, splits: dict[str, str | None], allow_test_split: bool) -> None:
    """Refuse to tune or calibrate on the test split unless asked explicitly: results reported on the split
    the settings were chosen on are biased upwards."""
    for flag, split in splits.items():
        why = split is not None and reads_test_split(benchmark, split)
        if why and not allow_test_split:
            raise UserError(f"{flag} {split} is {why}: settings tuned on it make its results look better than they "
                            "are. Tune on a dev split, apart from the items you report on, or pass --allow-test-split "
                            "to do it anyway.")


def tune(model: str | Path, bench: str, *, out: str | Path, data: str | Path | None = None, split: str = "dev",
         options: dict[str, str] | None = None, calib_split: str | None = None, calib_data: str | Path | None = None,
         calib_items: int = 64, settings: TuneSettings = TuneSettings(), space_options: dict | None = None,
         storage: str | None = None, study_name: str = "fheads-tune", decoding: Decoding = Decoding(),
         batch_size: int = 8, dtype: str = "auto", device_map: str | None = None, progress: bool = True,
         allow_test_split: bool = False, engine: str = "hf",
         vllm_options: dict[str, str] | VLLMOptions | None = None) -> dict:
    """Run (or join, or resume) a study and confirm its best setting; writes tune.json, tune.md, settings.json,
    heads.json, the figures and log.txt under `out`, and returns the summary (see `summary.summarize`).
    `split` and `calib_split` may not be the benchmark's test split (`reads_test_split`) unless
    `allow_test_split`. `engine="vllm"` answers on a vLLM engine (with `vllm_options`, its own settings)."""

    requires("fheads tune", "optuna")
    check_engine(engine)
    out = Path(out)
    benchmark = get_benchmark(bench, **(options or {}))
    refuse_test_split(benchmark, {"--split": split, "--calib-split": calib_split}, allow_test_split)
    if data is None and benchmark.needs_data:
        raise UserError(f"{bench} needs --data: a local copy of the dataset (see the README).")
    check_writable(out)
    dev = _usable(benchmark.examples(data, split), f"{bench}: split '{split}'")
    search, confirm = divide(dev, settings.confirm_fraction, settings.seed)
    check_sizes(len(search), len(confirm), settings)
    engine_options = check_tune_engine(engine, vllm_options, model)
    config = read_config(model)
    text = config.get("text_config") or config
    space = SearchSpace(num_layers=attention_layer_count(text) or 1, **(space_options or {}))
    processor, notes = load_processor(model), []  # calibration images are checked against it before any work
    calibration, images, prompts = _calibration_inputs(processor, benchmark, data, calib_data, calib_split,
                                                       calib_items, search, notes.append)
    backend_name = VLLMBackend.name if engine == "vllm" else HFBackend.name
    identity = {"model": model_fingerprint(model), "backend": backend_name, "benchmark": bench,
                "data": str(Path(data).resolve()) if data else None, "split": split, "options": dict(benchmark.options),
                "items": len(dev), "confirm_fraction": settings.confirm_fraction, "seed": settings.seed,
                "rungs": settings.rungs(len(search)), "calibration": calibration,
                "space": asdict(space), "generation": decoding.identity(), "dtype": dtype}
    out.mkdir(parents=True, exist_ok=True)
    storage_url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    with quiet_optuna():
        study, heartbeats = join_study(storage_url, study_name, identity, settings, len(search))
    log = file_logger(out / "log.txt", progress)
    log(f"study '{study_name}' in {storage_url}: {len(search)} search items, {len(confirm)} confirmation items")
    for note in notes:
        log(f"warning: {note}")
    warn = (lambda message: None) if progress else \
        (lambda message: warnings.warn(message, FunctionalHeadsWarning, stacklevel=3))  # else in the log's lines
    planned = plan_before_search(study, len(confirm), settings)
    log(planned["note"])
    if planned["warning"]:
        log(f"warning: {planned['warning']}")
        warn(planned["warning"])
    started = time.perf_counter()
    with torch.no_grad(), quiet_optuna():
        if engine == "vllm":  # S_v by transformers (if the study lacks it), its model freed before the engine
            ratios = torch.tensor(cached(study, "ratios", lambda: _calibrated_apart(
                model, dtype, device_map, processor, images, prompts, space, batch_size, log)))
            model_type = config.get("model_type")
            log("starting the vLLM engine (once for the whole study)")
            backend = VLLMBackend.load(model, dtype=dtype, options=engine_options)
        else:
            vlm = load_model(model, dtype=dtype, device_map=device_map)
            model_type = locate(vlm).model_type
            backend = HFBackend(vlm, processor)
            ratios = torch.tensor(cached(study, "ratios", lambda: _calibrated(vlm, processor, images, prompts, space,
                                                                                batch_size, log)))
        scorer = Scorer(backend, benchmark, decoding, batch_size)
        baseline = cached(study, "vanilla_search", lambda: _vanilla(scorer, search, log))
        worker = StudyWorker(study, space, settings, scorer, search, ratios, model_type, baseline, log=log)
        done = sum(is_finished(t) for t in study.get_trials(deepcopy=False))
        with progress_lines("tune", settings.trials, min(done, settings.trials), unit="trials",
                            enabled=progress) as advance:
            run_trials(worker, advance, heartbeats)
        summary = summarize(worker, confirm, identity, storage_url, study_name, log, warn, planned)
    summary["model_path"] = str(Path(model).resolve())  # where it was read this time; the identity is its content
    summary["seconds_this_worker"] = round(time.perf_counter() - started, 1)
    summary["items_evaluated_this_worker"] = worker.evaluated_items
    report.write(summary, out, ratios, model_type)
    return summary


def check_tune_engine(engine: str, vllm_options, model) -> VLLMOptions | None:
    """The engine's settings, checked before any work: a known engine; for vLLM, installed, with options it
    takes, and a model it can run (architecture, head size on a CPU). With vLLM, `device_map` places only the
    transformers model that measures S_v."""
    check_engine(engine)
    if engine != "vllm":
        if vllm_options:
            raise UserError("--vllm-option is for --engine vllm.")
        return None
    require_vllm()
    options = vllm_options if isinstance(vllm_options, VLLMOptions) else VLLMOptions.parse(vllm_options)
    check_runnable(Path(model), read_config(model))
    return options


def _usable(examples, what: str) -> list[Example]:
    """The usable examples (a row the benchmark cannot read scores nothing and would dilute every gain)."""
    rows = list(examples)
    usable = [e for e in rows if isinstance(e, Example)]
    if not usable:
        reason = f": {rows[0].reason}" if rows else ""
        raise UserError(f"{what} holds no usable items{reason} (check --data and --split).")
    return usable


def _calibration_inputs(processor, benchmark, data, calib_data, calib_split, calib_items: int, search: list, warn):
    """(what the study records as its calibration, images, prompts), read and checked before the study opens,
    from a prompts file, a split of the benchmark, or the search part: the first `calib_items` whose image the
    model takes (`usable_calibration`; others are skipped with a warning). Images are functions that read them."""
    if calib_data is not None and calib_split is not None:
        raise UserError("Give --calib-data or --calib-split, not both.")
    if calib_data is not None:
        source, what = {"data": str(Path(calib_data).resolve())}, str(calib_data)
        items = file_calibration_items(calib_data)
    else:
        pool = search if calib_split is None else benchmark.examples(data, calib_split)
        source = {"split": calib_split or "search part"}
        what = f"--calib-split {calib_split}" if calib_split else "the search part"
        items = (CalibrationItem(f"item {e.id}" + (f" ({e.source})" if e.source else ""), e.prompt, e.load_image,
                                 e.image_name) for e in pool if isinstance(e, Example) and e.image is not None)
    chosen = usable_calibration(processor, items, calib_items, warn, what)
    return {**source, "items": len(chosen)}, [item.image for item in chosen], [item.prompt for item in chosen]


def _calibrated(model, processor, images, prompts, space: SearchSpace, batch_size: int, log) -> list:
    """Mean S_v [layers, heads] over the calibration items, as a JSON-ready list."""
    probe = RescaleConfig(0, 0, 1.0, 0.0, query_tokens=space.query_tokens)
    log(f"measuring S_v on {len(prompts)} calibration items (once per study)")
    batches = prompt_batches(processor, images, prompts, batch_size)
    heads = calibrate(model, (to_model_device(b, model) for b in batches), probe)
    return heads.ratios.tolist()


def _calibrated_apart(model, dtype: str, device_map: str | None, processor, images, prompts, space: SearchSpace,
                      batch_size: int, log) -> list:
    """`_calibrated` on a transformers model loaded for it alone and freed after, so that it and the vLLM
    engine are never in memory together."""
    import gc

    vlm = load_model(model, dtype=dtype, device_map=device_map)
    try:
        return _calibrated(vlm, processor, images, prompts, space, batch_size, log)
    finally:
        del vlm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _vanilla(scorer: Scorer, search: list, log) -> list[float]:
    log(f"vanilla on the {len(search)} search items (once per study)")
    return scorer.scores(None, search)
