"""`pool_watch_sensor`: where a daemon launches the runs, a step stranded in the pool `mlflow_champion` by Dagster's
claim race is assigned the free slot (`ml_assets.pools`); `make run`'s runner watches its own runs."""

from __future__ import annotations

import json

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from ml_assets.keys import CHAMPION_POOL
from ml_assets.pools import assign_stranded


@sensor(
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=f"Gives the free slot of the pool {CHAMPION_POOL} to a step seen queued beside it on two ticks in a "
    "row (a race in Dagster's claim leaves it waiting for ever); launches no run.",
)
def pool_watch_sensor(context: SensorEvaluationContext):
    seen = frozenset(tuple(step) for step in json.loads(context.cursor or "[]"))
    now, assigned = assign_stranded(context.instance, CHAMPION_POOL, seen)
    context.update_cursor(json.dumps(sorted(now)))
    if assigned:
        steps = ", ".join(f"{step} of run {run}" for run, step in sorted(assigned))
        context.log.warning(f"pool {CHAMPION_POOL}: a free slot given to the step stranded beside it ({steps})")
        return SkipReason(f"assigned the free slot of pool {CHAMPION_POOL} to a stranded step ({steps})")
    looked_again = " (one seen queued beside a free slot: looked at again next tick)" if now else ""
    return SkipReason(f"no step stranded in pool {CHAMPION_POOL}{looked_again}")
