"""When features, models and predictions build: `WINDOW_READY`, evaluated by `training_automation_sensor`.

A month trains once every month of its training window is ingested and none failed a blocking
check; what each part of the condition is for is in docs/architecture.md (Automation).
"""

import warnings

from dagster import (
    AssetCheckKey,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    AutomationContext,
    AutomationResult,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    Definitions,
    evaluate_automation_conditions,
)

from ml_assets import settings
from ml_assets.automation.jobs import TRAINING_TAG
from ml_assets.core.performance import ChampionOnMonth, DecayThresholds, months_to_score_again, retrain_reasons
from ml_assets.core.rules import percent
from ml_assets.keys import FEATURES, MODEL_PERFORMANCE, MONITORING, PREDICTION, TRAINED_MODEL, TRAINING
from ml_assets.partitions import monthly_partitions, window_months
from ml_assets.records import latest_metadata, partitions_in_progress

RETRAIN_POLICY = settings.RETRAIN.value()  # shapes the conditions, so it is fixed when the code location loads
DECAY = DecayThresholds(**{name: setting.value() for name, setting in settings.DECAY.items()})


class MonthRule(AutomationCondition):
    """True for the candidate months where `holds` does (or those `true_months` gives, for a rule that reads the
    records of every month at once); subclasses name the rule, and the UI shows it."""

    LABEL, TEXT = "", ""

    @property
    def description(self) -> str:
        return self.TEXT

    def get_label(self) -> str:
        return self.LABEL

    def holds(self, instance: DagsterInstance, month: str) -> bool:
        raise NotImplementedError

    def true_months(self, instance: DagsterInstance, months: set[str]) -> set[str]:
        return {month for month in months if self.holds(instance, month)}

    def evaluate(self, context: AutomationContext) -> AutomationResult:
        candidates, instance = context.candidate_subset, context.asset_graph_view.instance
        true = self.true_months(instance, set(candidates.expensively_compute_partition_keys()))
        return AutomationResult(context, candidates.compute_intersection_with_partition_keys(true))


class HasTrainingMonths(MonthRule):
    LABEL, TEXT = "has_training_months", "the month's training window holds an earlier month"

    def holds(self, instance: DagsterInstance, month: str) -> bool:
        return len(window_months(month)) > 1


def _champion(instance: DagsterInstance, month: str) -> ChampionOnMonth | None:
    """The champion as model_performance recorded it for `month`; None while the month is not scored."""
    recorded = latest_metadata(instance, MODEL_PERFORMANCE, month)
    return None if recorded is None else ChampionOnMonth.from_metadata(recorded)


class PerformanceMeasured(MonthRule):
    LABEL, TEXT = "performance_measured", "model_performance has scored the champion on the month"

    def holds(self, instance: DagsterInstance, month: str) -> bool:
        return _champion(instance, month) is not None


class _RetrainReason(MonthRule):
    def holds(self, instance: DagsterInstance, month: str) -> bool:
        champion = _champion(instance, month)
        return champion is not None and retrain_reasons(champion, month, DECAY)[self.LABEL]


class NoChampion(_RetrainReason):
    LABEL, TEXT = "no_champion", "the registry has no champion (none yet, or its alias was removed)"


class ChampionDecayed(_RetrainReason):
    LABEL, TEXT = (
        "champion_decayed",
        "the champion's realized RMSE on the month exceeds its test RMSE by more than "
        f"{percent(DECAY.decay_threshold)}",
    )


class ChampionTooOld(_RetrainReason):
    LABEL, TEXT = "champion_too_old", f"the champion was tested more than {DECAY.max_model_age_months} months before"


class ModelTrainedSinceScored(MonthRule):
    LABEL, TEXT = (
        "model_trained_since_scored",
        "a model tested before the month was trained after model_performance last tried to score it, and none is "
        "training",
    )

    def true_months(self, instance: DagsterInstance, months: set[str]) -> set[str]:
        latest = instance.get_latest_storage_id_by_partition
        # A run's planned materialization counts as a try, so that a run that failed is not launched again and again.
        planned = latest(MODEL_PERFORMANCE, DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        scored = latest(MODEL_PERFORMANCE, DagsterEventType.ASSET_MATERIALIZATION)
        tried = {
            month: max(planned.get(month, -1), scored.get(month, -1)) for month in months & (set(planned) | set(scored))
        }
        trained = latest(TRAINED_MODEL, DagsterEventType.ASSET_MATERIALIZATION)
        # Runs, asset backfills and `make backfill` ranges; job backfills count once their runs are launched.
        training = partitions_in_progress(
            instance, TRAINED_MODEL, monthly_partitions, monthly_partitions.get_partition_keys(), jobs=()
        )
        return months_to_score_again(tried, trained, training)


_MISSING = AutomationCondition.any_deps_missing()
_BLOCKING_CHECK_FAILED = AutomationCondition.any_checks_match(AutomationCondition.check_failed(), blocking_only=True)
_UPDATED = (AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated()).since_last_handled()
_QUIET = ~AutomationCondition.any_deps_in_progress() & ~AutomationCondition.in_progress()
# Eager for every month, not only the latest (Dagster 1.13's eager() keeps to the latest time window).
_EAGER = (_UPDATED & _QUIET).with_label("eager_every_month")
# The data's blocking checks; not model_gate's refusal on trained_model, a WARN that blocks nothing (predictions
# then score the month with the champion).
CHECKS_PASSED = ~(
    AutomationCondition.any_deps_match(
        _BLOCKING_CHECK_FAILED | AutomationCondition.any_deps_match(_BLOCKING_CHECK_FAILED)
    ).ignore(AssetSelection.assets(TRAINED_MODEL))
).with_label("any_deps_blocking_check_failed")


def failed_blocking_checks(
    defs: Definitions, selection: AssetSelection, instance: DagsterInstance, month: str
) -> list[tuple[str, str]]:
    """(check, month it failed for) of the blocking checks by which CHECKS_PASSED keeps `month` of an asset in
    `selection` from building, as automation judges it; for what launches runs outside automation (the schedule).

    Dagster evaluates CHECKS_PASSED alone, in place of each asset's own condition, and its evaluation names the
    checks: those of every month the held-back assets read, not only the months that `month` reads.
    """
    with warnings.catch_warnings():  # `map_resolved_asset_specs` is a preview in Dagster 1.13
        warnings.filterwarnings("ignore", message=".*map_resolved_asset_specs.*")
        judged = defs.map_resolved_asset_specs(
            func=lambda spec: spec.replace_attributes(automation_condition=CHECKS_PASSED), selection=selection
        )
    result = evaluate_automation_conditions(judged, instance, asset_selection=selection)
    blocked = [r for r in result.results if month not in r.true_subset.expensively_compute_partition_keys()]
    failed, pending = set(), list(blocked)
    while pending:
        node = pending.pop()
        pending += node.child_results
        if isinstance(node.key, AssetCheckKey):
            failed |= {
                (node.key.to_user_string(), key) for key in node.true_subset.expensively_compute_partition_keys()
            }
    return sorted(failed)


_RETRAIN_DUE = (PerformanceMeasured() & (NoChampion() | ChampionDecayed() | ChampionTooOld())).with_label("retrain_due")

# model_performance: as soon as the month is in, and again once the models tested before it that were still to
# train when it was scored are all registered (automation catching up on several months, a month trained again).
MONTH_SCORABLE = (
    ((_UPDATED | ModelTrainedSinceScored()) & _QUIET) & ~_MISSING.with_label("month_missing") & CHECKS_PASSED
).with_label("month_scorable")
WINDOW_READY = (
    _EAGER & HasTrainingMonths() & ~_MISSING.with_label("window_months_missing") & CHECKS_PASSED
).with_label("window_ready")
if RETRAIN_POLICY == "on_decay":
    # The month's model trains only when it is due; its predictions then wait for it, else use the champion.
    TRAINING_DUE = (WINDOW_READY & _RETRAIN_DUE).with_label("window_ready_and_retrain_due")
    PREDICTIONS_READY = (
        _EAGER
        & HasTrainingMonths()
        & ~_MISSING.ignore(AssetSelection.assets(TRAINED_MODEL)).with_label("month_missing")
        & CHECKS_PASSED
        & (
            ~AutomationCondition.any_deps_match(AutomationCondition.missing())
            .allow(AssetSelection.assets(TRAINED_MODEL))
            .with_label("month_model_missing")
            | (PerformanceMeasured() & ~_RETRAIN_DUE).with_label("retrain_not_due")
        )
    ).with_label("predictions_ready")
else:
    TRAINING_DUE, PREDICTIONS_READY = WINDOW_READY, WINDOW_READY

with warnings.catch_warnings():  # `use_user_code_server` is beta in Dagster 1.13, and needed here
    warnings.filterwarnings("ignore", message=".*use_user_code_server.*")
    training_automation_sensor = AutomationConditionSensorDefinition(
        "training_automation_sensor",
        target=AssetSelection.groups(MONITORING, FEATURES, TRAINING, PREDICTION),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.AUTOMATION_INTERVAL_SECONDS.value(),
        # A deployment's run queue allows one training run per machine by this tag (deploy/dagster.yaml).
        run_tags=dict([TRAINING_TAG]),
        # Evaluated in the code server: the daemon alone cannot evaluate a custom condition (HasTrainingMonths).
        use_user_code_server=True,
        description="Evaluates the automation conditions of monitoring, features, models and predictions: a month "
        "is scored once ingested, and trains once its whole window is in (and, on_decay, once retraining is due).",
    )
