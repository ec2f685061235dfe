"""Optuna search over XGBoost hyperparameters, on the training window's holdout only.

A study tunes on a sample of the window whose size follows its time budget (`sample_rows`), so that
a trial takes a small part of the budget however large the months are; the final model is then
trained on every row. The budget counts from the start of `tune` (study setup and the sample's
matrices included) and also ends the running trial's training.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from ml_assets.core import frame_parts
from ml_assets.core.credentials import mask
from ml_assets.core.errors import chain
from ml_assets.core.features import SPLIT, TRAIN, VALID, DesignMatrices
from ml_assets.core.frame_parts import Frame
from ml_assets.core.locks import file_lock, lock_at_begin, sqlite_file, store_lock
from ml_assets.core.model import DEFAULT_PARAMS, best_iteration, best_score, fit, stop_at, training_matrices

# Most boosting rounds of a trial, and the rounds without a better holdout score that end it sooner.
MAX_ROUNDS, EARLY_STOPPING_ROUNDS = 600, 30
# Training rows (train + valid) tuned on per second of budget and per XGBoost thread: on the 2 cores
# this project is measured on, a trial on such a sample takes a few percent of the budget (a few
# hundred rounds at about a microsecond per row and round), so a study runs tens of trials.
SAMPLE_ROWS_PER_THREAD_SECOND = 700
MIN_SAMPLE_ROWS = 5_000
# A trial whose process died (kill -9) stops beating; optuna marks it FAILED once the grace period
# has passed and re-queues its parameters once, so a plain retry of the month continues the study.
HEARTBEAT_SECONDS, GRACE_SECONDS = 5, 20
# How long a study whose storage was lost (a database restart) waits for it before its step fails.
STORAGE_WAIT_SECONDS = 60
# Tries at a storage's first creation on a server: each of optuna's two creating transactions (its tables, then
# alembic's version stamp) can be lost once to another process, and the third try finds both made.
CREATE_TRIES = 3
# Each report is a write to the study's RDB storage: every round would cost more than the round.
REPORT_EVERY = 10


def study_name(feature_set: str, month: str, prefix: str = "trip_duration") -> str:
    """A month's study: one per feature set, continued by every materialization of the month."""
    return f"{prefix}-{feature_set}-{month}"


def sample_rows(timeout_seconds: float, threads: int) -> int:
    """How many training rows a study with this budget tunes on."""
    return max(MIN_SAMPLE_ROWS, int(SAMPLE_ROWS_PER_THREAD_SECOND * threads * timeout_seconds))


def tuning_sample(features: Frame, rows: int, seed: int = 0) -> pd.DataFrame:
    """At most `rows` of the feature frame's train and valid rows, drawn at random (the same for the same
    frame, size and seed), in the frame's order; the test month is left out. From a stored frame (a
    parquet file), only the sample's rows are kept while reading it."""
    split = frame_parts.columns(features, [SPLIT])[SPLIT]
    training = np.flatnonzero(split.isin([TRAIN, VALID]).to_numpy())
    if len(training) > rows:
        training = training[np.sort(np.random.default_rng(seed).choice(len(training), rows, replace=False))]
    return frame_parts.at(features, training)


# Not tuned: early stopping chooses the rounds for it. On the 2023 windows, studies that tuned it chose 0.08 to
# 0.09, whose models did worse on the whole window's holdout than this rate's (docs/model.md).
FIXED_PARAMS = {"learning_rate": DEFAULT_PARAMS["learning_rate"]}


def suggest_params(trial) -> dict:
    """The search space: around DEFAULT_PARAMS, in the regularised region where what wins on the newest days of
    the window also wins on the month after it (heavier leaves, no very shallow or deep trees); FIXED_PARAMS
    are added to every trial."""
    return {
        # Bounded so that one trial stays a few seconds on two cores: the study has a time budget.
        "max_depth": trial.suggest_int("max_depth", 6, 10),
        "min_child_weight": trial.suggest_float("min_child_weight", 10.0, 200.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.6, 0.9),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 0.9),
        "reg_lambda": trial.suggest_float("reg_lambda", 1.0, 30.0, log=True),
    }


def _failed_trial_callback():
    """What happens to a trial whose process or storage connection was lost: its parameters are tried once more."""
    from optuna.storages import RetryFailedTrialCallback

    return RetryFailedTrialCallback(max_retry=1)


def study_storage(url: str):
    """optuna's RDB storage with heartbeats; its tables created once even when two runs start together, and on
    sqlite each of their transactions serialized (lock_at_begin), as a server's row locks would.

    A sqlite file is only ever shared by the processes of its machine: its first creation is under a lock file
    beside it. A database server is shared by several machines (Celery workers, run pods), where a lock file
    holds on one only: there, a creation lost to another process's is tried again, and finds what that one made.
    On a server, a pooled connection is also tested before use (pool_pre_ping), so that one the server
    dropped (a restart) is replaced instead of failing the next trial.
    """
    import optuna

    def storage():
        return optuna.storages.RDBStorage(
            url,
            # Every sqlite transaction takes the write lock (lock_at_begin): wait up to 30 s for it, not pysqlite's 5.
            engine_kwargs={"connect_args": {"timeout": 30}} if sqlite_file(url) else {"pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            failed_trial_callback=_failed_trial_callback(),
        )

    database = sqlite_file(url)
    if database is None:
        return _created_on_server(storage)
    with file_lock(store_lock(database)):
        made = storage()
    lock_at_begin(made.engine)
    return made


def _created_on_server(storage, tries: int = CREATE_TRIES):
    """`storage()` on a database server, made again where another process created the same thing at the same
    moment: PostgreSQL refuses the second CREATE of optuna's tables and types, and the second stamp of
    alembic's version, with an IntegrityError (the winner's not yet committed) or a ProgrammingError
    (`already exists`); optuna's own version row already takes a duplicate as found."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        return storage()
    except (IntegrityError, ProgrammingError):
        if tries == 1:
            raise
        return _created_on_server(storage, tries - 1)


class StorageLost(RuntimeError):
    """optuna's storage could not be reached during a study (a database restart); the study goes on once it is
    back, so the step is worth retrying."""


def _storage_error(error: BaseException | None) -> BaseException | None:
    """The storage's own error (optuna's, SQLAlchemy's) that `error` was raised from or during, if any: optuna
    may fail on its own when the storage goes (an UnboundLocalError of optuna 5.1)."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    return next((link for link in chain(error) if isinstance(link, StorageInternalError | SQLAlchemyError)), None)


def _accepts_connections(storage) -> bool:
    """Whether the storage's database takes a new connection: a pooled one may still reach a server that is
    shutting down, and the step must not end (its events are written) before the server is back."""
    import sqlalchemy

    storage.engine.dispose()
    try:
        with storage.engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError:
        return False
    return True


def _fail_when_back(study, storage, number: int) -> bool:
    """Once the storage is back (within STORAGE_WAIT_SECONDS), mark trial `number` FAILED and re-queue its
    parameters; False if it did not come back (the next run's heartbeat check then fails the trial)."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + STORAGE_WAIT_SECONDS
    while True:
        try:
            if _accepts_connections(storage):
                frozen = next(trial for trial in study.get_trials(deepcopy=False) if trial.number == number)
                if frozen.state == TrialState.RUNNING:
                    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
                    _failed_trial_callback()(study, frozen)
                return True
        except Exception as error:
            if _storage_error(error) is None:
                return False
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def _optimize(study, storage, objective: Callable, **options) -> None:
    """`study.optimize`; when the storage is lost midway (optuna then fails with its own errors), the trial it cut
    off is failed once the storage is back and StorageLost is raised, where the trial stayed RUNNING.

    Each trial's first heartbeat is written before its work starts: optuna's heartbeat thread writes it a moment
    later, and a trial killed before then had none, so no later study's heartbeat check ever failed it.
    """
    running: list[int] = []

    def tracked(trial) -> float:
        running[:] = [trial.number]
        storage.record_heartbeat(trial._trial_id)  # optuna's Trial names its storage id only privately
        return objective(trial)

    try:
        study.optimize(tracked, **options)
    except Exception as error:
        lost = _storage_error(error)
        if not running or lost is None:
            raise
        failed = "marked FAILED" if _fail_when_back(study, storage, running[0]) else "left to the heartbeat check"
        said = mask(f"{type(lost).__name__}: {str(lost).splitlines()[0] if str(lost) else ''}")
        raise StorageLost(
            f"optuna's storage was lost during trial {running[0]} of {study.study_name} ({said}); the trial is {failed}"
        ) from error


def best_params_of(storage_url: str, study_name: str) -> dict | None:
    """The best params of study `study_name` (a warm start for the next one); None if it has none."""
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=study_storage(storage_url)).best_params
    except (KeyError, ValueError):  # no such study, or no finished trial in it
        return None


def _finished(study) -> int:
    """Trials that ran to the end or were pruned; failed ones (a killed process) do not count."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _pruning_callback(trial, observation_key: str):
    """optuna's XGBoost pruning callback, reporting every REPORT_EVERY rounds instead of every round."""
    from optuna_integration import XGBoostPruningCallback

    class ReportEvery(XGBoostPruningCallback):
        def after_iteration(self, model, epoch: int, evals_log) -> bool:
            return epoch % REPORT_EVERY == 0 and super().after_iteration(model, epoch, evals_log)

    return ReportEvery(trial, observation_key)


class TrialProgress(NamedTuple):
    """One finished trial of a study, as the step logs it and `make run`'s live line reads it back."""

    finished: int  # trials finished in this call, this one included
    budget: int  # trials this call may run
    number: int  # the trial's number in the study
    state: str  # complete, pruned, failed
    value: float | None  # validation RMSE; None when pruned
    best: float
    best_trial: int

    _LINE = re.compile(
        r"trial (\d+) of (\d+) \(#(\d+)\) (\w+): (?:valid RMSE ([\d.]+)|pruned); best so far ([\d.]+) \(trial (\d+)\)"
    )

    def line(self) -> str:
        value = "pruned" if self.value is None else f"valid RMSE {self.value:.4f}"
        return (
            f"trial {self.finished} of {self.budget} (#{self.number}) {self.state}: {value}; "
            f"best so far {self.best:.4f} (trial {self.best_trial})"
        )

    @classmethod
    def parse(cls, line: str) -> TrialProgress | None:
        """The progress a `line()` wrote; None for any other line."""
        found = cls._LINE.match(line)
        if found is None:
            return None
        finished, budget, number, state, value, best, best_trial = found.groups()
        return cls(int(finished), int(budget), int(number), state, value and float(value), float(best), int(best_trial))


@dataclass(frozen=True)
class TuningResult:
    params: dict
    valid_rmse: float
    best_trial: int
    trials_run: int  # in this call
    trials_total: int  # in the study, earlier materializations included
    study: object  # the optuna Study, for plots


def tune(
    data: DesignMatrices,
    storage_url: str,
    study_name: str,
    n_trials: int,
    timeout_seconds: float,
    warm_start: dict | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[TrialProgress], None] = lambda trial: print(trial.line()),
    num_boost_round: int = MAX_ROUNDS,
    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
) -> TuningResult:
    """Continue (or start) the persistent study `study_name`; DEFAULT_PARAMS and `warm_start` are tried first.

    Ends within `timeout_seconds` of being called, give or take one boosting round and the last
    trial's bookkeeping; at least one trial runs.
    """
    import optuna

    deadline = time.monotonic() + timeout_seconds
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = study_storage(storage_url)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        load_if_exists=True,
        direction="minimize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20),
    )
    # Seeding a continued study like a new one would replay the trials it already ran.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.get_trials(deepcopy=False)))
    before = _finished(study)
    # The regularised defaults first (a trial the study already ran is not run again), then the warm start.
    for params in (DEFAULT_PARAMS, warm_start):
        if params:
            study.enqueue_trial(params, skip_if_exists=True)

    matrices = training_matrices(data, threads)  # once for every trial

    def objective(trial) -> float:
        # optuna's own timeout is only checked between trials, so one long trial (a loaded machine) would
        # overrun the budget by its whole length; stopped at the deadline, it keeps its best holdout score.
        callbacks = [
            _pruning_callback(trial, "valid-rmse"),
            stop_at(deadline, lambda epoch: trial.set_user_attr("stopped_by_time_budget_at_round", epoch)),
        ]
        params = {**suggest_params(trial), **FIXED_PARAMS}
        fitted = fit(data, params, num_boost_round, early_stopping_rounds, threads, callbacks, matrices)
        trial.set_user_attr("best_iteration", best_iteration(fitted))
        return best_score(fitted)

    def report(study, trial) -> None:
        value = None if trial.value is None else float(trial.value)
        best = study.best_trial
        progress(
            TrialProgress(
                _finished(study) - before,
                n_trials,
                trial.number,
                trial.state.name.lower(),
                value,
                float(best.value),
                best.number,
            )
        )

    timeout = max(deadline - time.monotonic(), 0)
    _optimize(study, storage, objective, n_trials=n_trials, timeout=timeout, callbacks=[report])
    if _finished(study) == before:  # the setup took the whole budget: one trial, stopped after its first round
        _optimize(study, storage, objective, n_trials=1, callbacks=[report])
    best = study.best_trial
    return TuningResult(
        params={**best.params, **FIXED_PARAMS},
        valid_rmse=float(best.value),
        best_trial=best.number,
        trials_run=_finished(study) - before,
        trials_total=_finished(study),
        study=study,
    )
