"""`fheads tune`: the method's settings chosen by an Optuna study on a dev split, then confirmed on held-out
dev items with a paired test against vanilla. The test split is never read.

The dev split is shuffled once (seeded) and divided into a search part and a confirmation part. S_v is
measured once per study on the calibration items and kept in the study itself (a user attribute, so every
worker on every machine reads the same values); a trial only re-identifies heads (`SearchSpace.suggest`)
and evaluates. A trial is scored on growing prefixes of the search part (rungs of 25, 50, 100, ... items)
by its paired gain over vanilla on those same items, which Optuna's pruner (successive halving or
Hyperband) compares across trials; a head map that a finished trial already had is not evaluated again.
The best trial is then evaluated once on the confirmation part: confirmed when its paired gain is positive
and McNemar's p < alpha; otherwise the result is vanilla (gains of 1), said plainly.

Several workers on one storage (the same command on several GPUs or machines) share the study: each runs
trials until the study holds `trials` finished ones. A worker killed mid-trial leaves a RUNNING trial; an
RDB storage's heartbeat (any host), or a dead process id (same host, any storage), fails it and its
parameters are queued again.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..core.config import RescaleConfig
from ..core.heads import HeadMap, calibrate, identify_heads, thresholds_for_shares
from ..evaluation.benchmarks import Example, get_benchmark
from ..evaluation.methods import get_method
from ..evaluation.runs import Decoding, answer_all, settings_hash
from ..evaluation.seeding import text_seed
from ..evaluation.stats import items_needed
from ..models.architectures import attention_layer_count, locate
from ..models.loading import load_model, load_processor, prompt_batches, read_config, read_prompts, to_model_device
from ..utils.progress import progress as progress_lines

PRUNERS = ("halving", "hyperband", "none")
HOST = socket.gethostname()
RACES = ("already exists", "UNIQUE constraint failed", "database is locked")  # two workers making one schema


@dataclass(frozen=True)
class SearchSpace:
    """The settings a trial draws, derived from the model's layer count. Thresholds are drawn as the share
    of all heads each class selects (`thresholds_for_shares`); a share of 0, or a gain of 1, switches a class
    off, so perception-only, reasoning-only and vanilla are points of the space."""

    num_layers: int
    max_share: float = 0.1  # per class, of all heads; the paper found ~6% of heads best and 18% harmful
    share_step: float = 0.01
    gain_low: float = 1.0  # below 1 (damping) only when asked for
    gain_high: float = 1.6
    gain_step: float = 0.05
    per_layer_gains: bool = False  # one gain per layer instead of one per class
    query_tokens: int = 1  # S_v averaged over the last k prompt tokens (fixed per study)

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}.")
        if not 0 < self.max_share <= 0.5 or not 0 < self.share_step <= self.max_share:
            raise ValueError(f"max_share must be in (0, 0.5] and share_step in (0, max_share], got "
                             f"{self.max_share} and {self.share_step}.")
        if not 0 < self.gain_low <= 1 <= self.gain_high or self.gain_step <= 0:
            raise ValueError(f"gains must span 1 (gain_low <= 1 <= gain_high, both > 0), got "
                             f"[{self.gain_low}, {self.gain_high}] step {self.gain_step}.")
        if self.query_tokens < 1:
            raise ValueError(f"query_tokens must be >= 1, got {self.query_tokens}.")

    def suggest(self, trial, ratios: torch.Tensor) -> RescaleConfig:
        """The trial's settings, thresholds read off the calibrated S_v [layers, heads]."""
        last = self.num_layers - 1
        perc_last = trial.suggest_int("perc_last_layer", 0, last)
        reas_first = trial.suggest_int("reas_first_layer", 0, last)
        shares = [trial.suggest_float(f"{kind}_share", 0.0, self.max_share, step=self.share_step)
                  for kind in ("perc", "reas")]
        tau_perc, tau_reas = thresholds_for_shares(ratios, perc_last, reas_first, *shares)
        tau_perc, tau_reas = math.floor(tau_perc * 1e6) / 1e6, math.ceil(tau_reas * 1e6) / 1e6  # readable files
        if tau_reas >= tau_perc and reas_first <= perc_last:
            raise Infeasible(f"the reasoning threshold {tau_reas:.4f} is not below the perception one {tau_perc:.4f}")
        if self.per_layer_gains:
            gains = {"layer_gains": tuple(self._gain(trial, f"g_layer_{layer}") for layer in range(self.num_layers))}
        else:
            gains = {"g_perc": self._gain(trial, "g_perc"), "g_reas": self._gain(trial, "g_reas")}
            gains = {name: 1.0 if share == 0 else gain for (name, gain), share in zip(gains.items(), shares)}
        return RescaleConfig(perc_last, reas_first, tau_perc, tau_reas, **gains, query_tokens=self.query_tokens)

    def _gain(self, trial, name: str) -> float:
        return round(trial.suggest_float(name, self.gain_low, self.gain_high, step=self.gain_step), 6)


class Infeasible(ValueError):
    """A drawn setting that no head map can have (the two thresholds cross)."""


@dataclass(frozen=True)
class TuneSettings:
    """How a study searches and confirms; validated on construction."""

    trials: int = 200  # finished (complete or pruned) trials of the whole study, over all workers and resumes
    confirm_fraction: float = 0.5  # share of the dev split held out for confirmation
    min_effect: float = 0.05  # the smallest gain worth confirming (a share: 0.05 = 5 points)
    alpha: float = 0.05
    power: float = 0.8
    pruner: str = "halving"
    min_items: int = 25  # the first rung
    reduction_factor: int = 2
    seed: int = 0
    heartbeat: int = 60  # seconds (RDB storages); a trial silent for twice this is taken as dead

    def __post_init__(self):
        checks = [(self.trials >= 1, "trials must be >= 1"),
                  (0 < self.confirm_fraction < 1, "confirm_fraction must be in (0, 1)"),
                  (0 < self.min_effect < 1, "min_effect must be a share in (0, 1), e.g. 0.05 for 5 points"),
                  (0 < self.alpha < 1 and 0 < self.power < 1, "alpha and power must be in (0, 1)"),
                  (self.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}"),
                  (self.min_items >= 1 and self.reduction_factor >= 2, "min_items >= 1 and reduction_factor >= 2"),
                  (self.heartbeat >= 1, "heartbeat must be >= 1 second")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message} (got {self}).")

    def rungs(self, n: int) -> list[int]:
        """Item counts at which a trial reports: min_items * reduction_factor**k below n, then n."""
        sizes, size = [], self.min_items
        while size < n:
            sizes.append(size)
            size *= self.reduction_factor
        return sizes + [n]

    def pruner_object(self, n: int):
        import optuna

        if self.pruner == "halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.min_items,
                                                          reduction_factor=self.reduction_factor)
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=self.min_items, max_resource=n,
                                                  reduction_factor=self.reduction_factor)
        return optuna.pruners.NopPruner()


def divide(examples: list, confirm_fraction: float, seed: int) -> tuple[list, list]:
    """(search part, confirmation part) of the dev items: one seeded shuffle, then the tail held out."""
    order = sorted(range(len(examples)), key=lambda i: text_seed(f"{seed}/{examples[i].id}"))
    n_confirm = round(len(examples) * confirm_fraction)
    shuffled = [examples[i] for i in order]
    return shuffled[:len(shuffled) - n_confirm], shuffled[len(shuffled) - n_confirm:]


def check_sizes(n_search: int, n_confirm: int, settings: TuneSettings) -> None:
    """Raise before any work if the parts are too small to search or to confirm the effect sought."""
    needed = items_needed(settings.min_effect, None, settings.alpha, settings.power)
    if n_confirm < needed:
        typical = items_needed(settings.min_effect, 0.15, settings.alpha, settings.power)
        raise ValueError(f"The confirmation part holds {n_confirm} items: confirming a gain of "
                         f"{settings.min_effect:.0%} (alpha {settings.alpha}, power {settings.power}) needs at least "
                         f"{needed} even if every changed answer were a fix, and about {typical} when 15% of answers "
                         "change. Use a larger dev split, a larger --confirm-fraction or a larger --min-effect.")
    if n_search < settings.min_items:
        raise ValueError(f"The search part holds {n_search} items, fewer than the first rung's --min-items "
                         f"{settings.min_items}: use a larger dev split or a smaller --confirm-fraction.")


def heads_key(heads: HeadMap) -> str:
    """What identifies a head map's effect: a hash of its gains, rounded (identical maps are evaluated once)."""
    return settings_hash([round(g, 4) for g in heads.gains.flatten().tolist()])


@dataclass
class Scorer:
    """Scores of a head map (None: vanilla) on examples, through the same generation path as `fheads eval`."""

    model: object
    processor: object
    benchmark: object
    decoding: Decoding
    batch_size: int

    def method(self, heads: HeadMap | None):
        return get_method("static", heads=heads) if heads is not None else get_method("vanilla")

    def records(self, heads: HeadMap | None, examples: list) -> list[dict]:
        return answer_all(self.model, self.processor, self.benchmark, examples, self.method(heads), self.decoding,
                          self.batch_size)

    def accuracy(self, heads: HeadMap | None, examples: list) -> list[float]:
        return [float(r["score"] or 0.0) for r in self.records(heads, examples)]


# ------------------------------------------------------------------ storage and study


def open_storage(url: str, heartbeat: int):
    """An Optuna storage from a URL (sqlite:///..., postgresql://..., mysql://...) or journal:PATH; an
    unreachable one is one clear error."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    try:
        if url.startswith("journal:"):
            path = Path(url[len("journal:"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if "://" not in url:
            raise ValueError("it is neither a database URL (sqlite:///FILE, postgresql://..., mysql://...) nor "
                             "journal:PATH")
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words, and what we need
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                      grace_period=2 * heartbeat,
                                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
            except Exception as err:  # workers started together race to make the tables: the loser tries again
                if not any(race in str(err) for race in RACES) or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ModuleNotFoundError as err:
        raise ValueError(f"Cannot open the storage {url}: its database driver is not installed ({err.name}); "
                         "install it (e.g. pip install psycopg2-binary or pymysql).") from None
    except (ValueError, OSError, optuna.exceptions.StorageInternalError) as err:
        raise ValueError(f"Cannot open the storage {url}: {err}") from None
    except Exception as err:  # sqlalchemy's connection errors: unreachable host, bad credentials, ...
        raise ValueError(f"Cannot open the storage {url}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def open_study(storage, name: str, identity: dict, settings: TuneSettings, n_search: int):
    """The study `name` in the storage, made if new; one made with other settings (model, data, space, ...)
    is an error naming what differs, unless it holds nothing yet (a first command that failed before its S_v)."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=trial_sampler(settings.seed, 0),
                                pruner=settings.pruner_object(n_search), load_if_exists=True)
    stored = study.user_attrs.get("identity")
    if stored is None or (set(study.user_attrs) == {"identity"} and not study.get_trials(deepcopy=False)):
        study.set_user_attr("identity", identity)
    elif stored != json.loads(json.dumps(identity)):
        differ = [f"{key} (study: {stored.get(key)}; now: {identity.get(key)})"
                  for key in sorted(set(stored) | set(identity))
                  if stored.get(key) != json.loads(json.dumps(identity.get(key)))]
        raise ValueError(f"The study '{name}' was made with other settings: {'; '.join(differ)}. Use another --study "
                         "or --storage, or the study's own settings.")
    return study


def trial_sampler(seed: int, number: int):
    """TPE seeded by the trial's number: one worker's study is reproducible, and workers that start together
    draw different settings (a shared seed would make them draw the same ones). Independent TPE samples at
    each `suggest`, after the trial has its number; constant_liar keeps workers off each other's running trials."""
    import optuna

    return optuna.samplers.TPESampler(seed=text_seed(f"{seed}/{number}") % 2**32, n_startup_trials=10,
                                      constant_liar=True)


def cached(study, key: str, compute: Callable):
    """A study-wide value (S_v, vanilla's scores): read from the study, or computed once and stored there."""
    value = study.user_attrs.get(key)
    if value is None:
        value = compute()
        study.set_user_attr(key, value)
    return value


def _finished(trial) -> bool:
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and not trial.user_attrs.get("surplus")


def _alive_here(trial) -> bool | None:
    """Whether a RUNNING trial's worker is alive: True/False for a worker on this host, None elsewhere."""
    worker = trial.user_attrs.get("worker") or {}
    if worker.get("host") != HOST or not worker.get("pid"):
        return None
    try:
        os.kill(worker["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study) -> list[int]:
    """Fail the RUNNING trials of dead workers on this host and queue their parameters again (Optuna fails
    stale trials only through RDB heartbeats, before each trial it starts; this also covers the journal
    storage on one machine)."""
    import optuna
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _alive_here(trial) is False:
            try:  # Optuna has no public call to fail another process's trial; its retry callback does the same
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            failed.append(trial.number)
    return failed


# ------------------------------------------------------------------ the study's trials


@dataclass
class StudyWorker:
    """One worker's view of a study: its data (search items, S_v, vanilla's scores) and its objective."""

    study: object
    space: SearchSpace
    settings: TuneSettings
    scorer: Scorer
    search: list
    ratios: torch.Tensor
    model_type: str | None
    baseline: list  # vanilla's per-item scores on the search part
    log: Callable[[str], None] = print
    evaluated_items: int = field(default=0)

    def objective(self, trial) -> float:
        import optuna

        self.study.sampler = trial_sampler(self.settings.seed, trial.number)
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid()})
        trials = self.study.get_trials(deepcopy=False)
        if self._surplus(trial, trials):
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("the study already has its trials")
        try:
            config = self.space.suggest(trial, self.ratios)
        except Infeasible as err:
            trial.set_user_attr("infeasible", str(err))
            raise optuna.TrialPruned(str(err)) from None
        heads = identify_heads(self.ratios, config, self.model_type)
        key = heads_key(heads)
        for name, value in (("config", config.to_dict()), ("heads_key", key),
                            ("share_rescaled", (heads.gains != 1).float().mean().item())):
            trial.set_user_attr(name, value)
        if (heads.gains == 1).all():
            trial.set_user_attr("vanilla_equivalent", True)
            return 0.0
        same = self._same_map(key, trial.number, trials)
        if same is not None:
            trial.set_user_attr("same_as", same.number)
            if same.value is None:
                raise optuna.TrialPruned(f"the same head map as pruned trial {same.number}")
            return same.value
        return self._evaluate(trial, heads)

    def _evaluate(self, trial, heads: HeadMap) -> float:
        import optuna

        scores, start = [], 0
        for end in self.settings.rungs(len(self.search)):
            part = self.search[start:end]
            scores += self.scorer.accuracy(heads, part)
            self.evaluated_items += len(part)
            start = end
            diffs = [s - b for b, s in zip(self.baseline, scores)]  # paired: the same items as vanilla
            gain = sum(diffs) / len(diffs)
            trial.set_user_attr("scores", scores)
            trial.report(gain, end)
            if end < len(self.search) and (trial.should_prune() or clearly_worse(diffs)):
                raise optuna.TrialPruned(f"gain {gain:+.4f} on {end} items")
        return gain

    def _surplus(self, trial, trials: list) -> bool:
        """A backstop against two workers starting the study's last trial at once: trials are counted by number."""
        from optuna.trial import TrialState

        before = [t for t in trials if t.number < trial.number and not t.user_attrs.get("surplus")
                  and (t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))]
        return len(before) >= self.settings.trials

    def _same_map(self, key: str, number: int, trials: list):
        return next((t for t in trials if t.number != number and _finished(t)
                     and t.user_attrs.get("heads_key") == key and not t.user_attrs.get("vanilla_equivalent")), None)


def clearly_worse(diffs: list[float], z: float = 1.96) -> bool:
    """The paired test's verdict so far on per-item differences to vanilla: the gain's upper 95% bound is
    below 0."""
    if len(diffs) < 2:
        return False
    values = torch.tensor(diffs, dtype=torch.float64)
    return (values.mean() + z * values.std() / len(values) ** 0.5).item() < 0


def run_trials(tuner: StudyWorker, advance: Callable[[int], None], poll: float = 2.0) -> None:
    """Run trials until the study holds `trials` finished ones (this worker's share of them)."""
    import optuna
    from optuna.trial import TrialState

    def done(_, trial) -> None:  # Optuna hands over the trial this worker just finished
        if not trial.user_attrs.get("surplus"):
            tuner.log(_trial_line(trial))
            advance(1)

    study, target = tuner.study, tuner.settings.trials
    while True:
        for number in fail_dead_trials(study):
            tuner.log(f"trial {number}: its worker is gone; queued again")
        trials = study.get_trials(deepcopy=False)
        finished = sum(_finished(t) for t in trials)
        if finished >= target:
            return
        running = [t for t in trials if t.state == TrialState.RUNNING]
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if finished + len(running) >= target and not waiting:
            if not _can_finish(study, running):
                tuner.log(f"trials {[t.number for t in running]} are still running elsewhere; rerun once they end")
                return
            time.sleep(poll)
            optuna.storages.fail_stale_trials(study)  # heartbeat storages, any host (optimize does it per trial)
            continue
        study.optimize(tuner.objective, n_trials=1, catch=(), gc_after_trial=False, show_progress_bar=False,
                       callbacks=[done])


def _can_finish(study, running: list) -> bool:
    """Whether waiting can end: each running trial either is alive here or will be failed by heartbeats."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage) or all(_alive_here(t) for t in running)


def _trial_line(trial) -> str:
    attrs = trial.user_attrs
    value = "" if trial.value is None else f" gain {trial.value:+.4f}"
    note = next((f" ({k.replace('_', ' ')} {attrs[k]})" for k in ("same_as", "infeasible", "retry_of") if k in attrs),
                "")
    steps = max(trial.intermediate_values, default=0)
    return f"trial {trial.number} {trial.state.name.lower()}{value} on {steps or '-'} items, " \
           f"{attrs.get('share_rescaled', 0):.1%} of heads{note}"


# ------------------------------------------------------------------ the whole command


def tune(model: str | Path, bench: str, *, out: str | Path, data: str | Path | None = None, split: str = "dev",
         options: dict[str, str] | None = None, calib_split: str | None = None, calib_data: str | Path | None = None,
         calib_items: int = 64, settings: TuneSettings = TuneSettings(), space_options: dict | None = None,
         storage: str | None = None, study_name: str = "fheads-tune", decoding: Decoding = Decoding(),
         batch_size: int = 8, dtype: str = "auto", device_map: str | None = None, progress: bool = True) -> dict:
    """Run (or join, or resume) a study and confirm its best setting; writes tune.json, tune.md, settings.json,
    heads.json, the figures and log.txt under `out`, and returns the summary (see `tune_report`)."""
    from ..evaluation.api import check_writable
    from . import report as tune_report

    if importlib.util.find_spec("optuna") is None:
        raise ValueError("fheads tune needs Optuna: pip install 'functional-heads[tune]'.")
    out = Path(out)
    benchmark = get_benchmark(bench, **(options or {}))
    if data is None and benchmark.needs_data:
        raise ValueError(f"{bench} needs --data: a local copy of the dataset (see the README).")
    check_writable(out)
    dev = _usable(benchmark.examples(data, split), f"{bench}: split '{split}'")
    search, confirm = divide(dev, settings.confirm_fraction, settings.seed)
    check_sizes(len(search), len(confirm), settings)
    config = read_config(model)
    text = config.get("text_config") or config
    space = SearchSpace(num_layers=attention_layer_count(text) or 1, **(space_options or {}))
    calibration, images, prompts = _calibration_inputs(benchmark, data, calib_data, calib_split, calib_items, search)
    identity = {"model": str(Path(model).resolve()), "model_type": config.get("model_type"), "benchmark": bench,
                "data": str(Path(data).resolve()) if data else None, "split": split, "options": dict(benchmark.options),
                "items": len(dev), "confirm_fraction": settings.confirm_fraction, "seed": settings.seed,
                "rungs": settings.rungs(len(search)), "calibration": calibration,
                "space": asdict(space), "generation": decoding.identity(), "dtype": dtype}
    out.mkdir(parents=True, exist_ok=True)
    storage_url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    with _quiet_optuna():
        study = _opened(storage_url, study_name, identity, settings, len(search))
    log = _logger(out / "log.txt", progress)
    log(f"study '{study_name}' in {storage_url}: {len(search)} search items, {len(confirm)} confirmation items")
    started = time.perf_counter()
    with torch.no_grad(), _quiet_optuna():
        processor, vlm = load_processor(model), load_model(model, dtype=dtype, device_map=device_map)
        layout = locate(vlm)
        scorer = Scorer(vlm, processor, benchmark, decoding, batch_size)
        ratios = torch.tensor(cached(study, "ratios", lambda: _calibrated(vlm, processor, images, prompts, space,
                                                                            batch_size, log)))
        baseline = cached(study, "vanilla_search", lambda: _vanilla(scorer, search, log))
        tuner = StudyWorker(study, space, settings, scorer, search, ratios, layout.model_type, baseline, log=log)
        done = sum(_finished(t) for t in study.get_trials(deepcopy=False))
        with progress_lines("tune", settings.trials, min(done, settings.trials), unit="trials",
                            enabled=progress) as advance:
            run_trials(tuner, advance)
        summary = tune_report.summarize(study, tuner, confirm, identity, storage_url, study_name, log)
    summary["seconds_this_worker"] = round(time.perf_counter() - started, 1)
    summary["items_evaluated_this_worker"] = tuner.evaluated_items
    tune_report.write(summary, out, ratios, layout.model_type)
    return summary


def _opened(url: str, name: str, identity: dict, settings: TuneSettings, n_search: int):
    storage = open_storage(url, settings.heartbeat)
    try:
        return open_study(storage, name, identity, settings, n_search)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"Cannot open the study '{name}' in {url}: {type(err).__name__}: {err}") from None


def _usable(examples, what: str) -> list[Example]:
    """The usable examples (a row the benchmark cannot read scores nothing and would dilute every gain)."""
    rows = list(examples)
    usable = [e for e in rows if isinstance(e, Example)]
    if not usable:
        reason = f": {rows[0].reason}" if rows else ""
        raise ValueError(f"{what} holds no usable items{reason} (check --data and --split).")
    return usable


def _calibration_inputs(benchmark, data, calib_data, calib_split, calib_items: int, search: list):
    """(what the study records as its calibration, images, prompts), read and checked before the study opens,
    from a prompts file, a split of the benchmark, or the search part."""
    if calib_data is not None and calib_split is not None:
        raise ValueError("Give --calib-data or --calib-split, not both.")
    if calib_data is not None:
        rows = read_prompts(calib_data)[:calib_items]
        source, images, prompts = {"data": str(Path(calib_data).resolve())}, [r["image"] for r in rows], \
            [r["prompt"] for r in rows]
    else:
        pool = search if calib_split is None else benchmark.examples(data, calib_split)
        chosen = list(islice((e for e in pool if isinstance(e, Example) and e.image is not None), calib_items))
        source, images, prompts = {"split": calib_split or "search part"}, [e.load_image() for e in chosen], \
            [e.prompt for e in chosen]
    if not prompts:
        raise ValueError("No calibration item with an image: give --calib-data or --calib-split.")
    return {**source, "items": len(prompts)}, images, prompts


def _calibrated(model, processor, images, prompts, space: SearchSpace, batch_size: int, log) -> list:
    """Mean S_v [layers, heads] over the calibration items, as a JSON-ready list."""
    probe = RescaleConfig(0, 0, 1.0, 0.0, query_tokens=space.query_tokens)
    log(f"measuring S_v on {len(prompts)} calibration items (once per study)")
    batches = prompt_batches(processor, images, prompts, batch_size)
    heads = calibrate(model, (to_model_device(b, model) for b in batches), probe)
    return heads.ratios.tolist()


def _vanilla(scorer: Scorer, search: list, log) -> list[float]:
    log(f"vanilla on the {len(search)} search items (once per study)")
    return scorer.accuracy(None, search)


def _logger(path: Path, echo: bool) -> Callable[[str], None]:
    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        with open(path, "a") as f:
            f.write(line + "\n")
        if echo:
            import sys

            print(line, file=sys.stderr, flush=True)
    return log


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's own lines off inside the study, its verbosity restored after: ours go to log.txt, and its
    warning for a failed trial repeats the traceback that the CLI's one error line replaces (the error itself
    still propagates from `study.optimize`)."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)
