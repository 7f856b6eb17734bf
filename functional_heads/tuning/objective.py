"""The study's trials: what a trial scores and when it stops. A trial draws a setting (`SearchSpace`),
identifies its heads on the study's S_v and is scored on growing prefixes of the search part (rungs) by its
paired gain over vanilla on those same items; the pruner, or a gain clearly below 0, stops it early. A head
map that a finished trial already had is not evaluated again. `run_trials` runs this worker's share of the
study's trials."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.heads import HeadMap, identify_heads
from ..evaluation.engine import Backend, Decoding, answer_all
from ..evaluation.methods import get_method
from ..evaluation.runs import settings_hash
from .logs import trial_line
from .settings import TuneSettings
from .space import Infeasible, SearchSpace
from .storage import can_finish, fail_dead_trials, is_finished, this_worker, trial_sampler


def heads_key(heads: HeadMap) -> str:
    """What identifies a head map's effect: a hash of its gains, rounded (identical maps are evaluated once)."""
    return settings_hash([round(g, 4) for g in heads.gains.flatten().tolist()])


@dataclass
class Scorer:
    """Scores of a head map (None: vanilla) on examples, through the same generation path as `fheads eval`."""

    backend: Backend
    benchmark: object
    decoding: Decoding
    batch_size: int

    def method(self, heads: HeadMap | None):
        return get_method("static", heads=heads) if heads is not None else get_method("vanilla")

    def records(self, heads: HeadMap | None, examples: list) -> list[dict]:
        return answer_all(self.backend, self.benchmark, examples, self.method(heads), self.decoding, self.batch_size)

    def scores(self, heads: HeadMap | None, examples: list) -> list[float]:
        """The benchmark's score of each example's answer (0 for an answer it cannot score)."""
        return [float(r["score"] or 0.0) for r in self.records(heads, examples)]


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
        trial.set_user_attr("worker", this_worker())
        trials = self.study.get_trials(deepcopy=False)
        if self._surplus(trial, trials):
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("the study already has its trials")
        try:
            config = self.space.suggest(trial, self.ratios)
        except Infeasible as err:
            trial.set_user_attr("infeasible", str(err))
            raise optuna.TrialPruned(str(err)) from None
        heads = identify_heads(self.ratios, config, self.model_type, warn=False)  # the space bounds the share
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
            # a pruned trial keeps its last rung's gain as its value: only a complete trial's gain, measured
            # on the whole search part, may be reused as another complete trial's
            if same.state != optuna.trial.TrialState.COMPLETE:
                raise optuna.TrialPruned(f"the same head map as pruned trial {same.number}")
            return same.value
        return self._evaluate(trial, heads)

    def _evaluate(self, trial, heads: HeadMap) -> float:
        import optuna

        scores, start = [], 0
        for end in self.settings.rungs(len(self.search)):
            part = self.search[start:end]
            scores += self.scorer.scores(heads, part)
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
        return next((t for t in trials if t.number != number and is_finished(t)
                     and t.user_attrs.get("heads_key") == key and not t.user_attrs.get("vanilla_equivalent")), None)


def clearly_worse(diffs: list[float], z: float = 1.96) -> bool:
    """The paired test's verdict so far on per-item differences to vanilla: the gain's upper 95% bound is
    below 0."""
    if len(diffs) < 2:
        return False
    values = torch.tensor(diffs, dtype=torch.float64)
    return (values.mean() + z * values.std() / len(values) ** 0.5).item() < 0


def run_trials(worker: StudyWorker, advance: Callable[[int], None], heartbeats: bool, poll: float = 2.0) -> None:
    """Run trials until the study holds `trials` finished ones (this worker's share of them). `heartbeats`:
    whether the storage fails silent workers' trials on any host (`storage.has_heartbeats`)."""
    import optuna
    from optuna.trial import TrialState

    def done(_, trial) -> None:  # Optuna hands over the trial this worker just finished
        if not trial.user_attrs.get("surplus"):
            worker.log(trial_line(trial))
            advance(1)

    study, target = worker.study, worker.settings.trials
    while True:
        for number in fail_dead_trials(study):
            worker.log(f"trial {number}: its worker is gone; queued again")
        trials = study.get_trials(deepcopy=False)
        finished = sum(is_finished(t) for t in trials)
        if finished >= target:
            return
        running = [t for t in trials if t.state == TrialState.RUNNING]
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if finished + len(running) >= target and not waiting:
            if not can_finish(running, heartbeats):
                worker.log(f"trials {[t.number for t in running]} are still running elsewhere; rerun once they end")
                return
            time.sleep(poll)
            optuna.storages.fail_stale_trials(study)  # heartbeat storages, any host (optimize does it per trial)
            continue
        study.optimize(worker.objective, n_trials=1, catch=(), gc_after_trial=False, show_progress_bar=False,
                       callbacks=[done])
