"""The instance's newest runs and where each unfinished or failed one stopped, for a wait that timed
out: the shortest account of what a run did last, so it comes first in the failure."""

from __future__ import annotations

import time


def runs_report(instance, runs: int = 6, events: int = 10) -> str:
    """One line per run (newest first: status, job, partition, what launched it, the run it retries),
    and the last `events` events of each run that did not succeed."""
    from dagster import DagsterRunStatus

    lines = ["----- newest Dagster runs -----"]
    for run in instance.get_runs(limit=runs):
        tags = run.tags
        launched_by = tags.get("dagster/sensor_name") or tags.get("dagster/schedule_name") or "-"
        lines.append(
            f"{run.run_id[:8]} {run.status.value} {run.job_name} partition={tags.get('dagster/partition')} "
            f"by={launched_by} retry_of={tags.get('dagster/parent_run_id', '-')[:8]}"
        )
        if run.status != DagsterRunStatus.SUCCESS:
            records = instance.get_records_for_run(run.run_id, limit=events, ascending=False).records
            lines.extend(f"    {event_line(record.event_log_entry)}" for record in reversed(records))
    return "\n".join(lines)


def event_line(entry) -> str:
    """An event as time, type, step, process, the start of its message and of its error, if any."""
    event = entry.dagster_event
    kind = event.event_type_value if event else "LOG"
    pid = f"pid={event.pid}" if event and event.pid else ""
    error = getattr(event.event_specific_data, "error", None) if event else None
    while error is not None and error.cause is not None:  # the user's exception, not Dagster's wrapper
        error = error.cause
    cause = " ".join(error.message.split())[:200] if error else ""
    if error is not None and error.stack:  # where the user's exception was raised: its innermost frame
        cause += " at " + " ".join(error.stack[-1].split())[:200]
    stamp = time.strftime("%H:%M:%S", time.gmtime(entry.timestamp)) + f".{int(entry.timestamp % 1 * 1000):03d}"
    return " ".join(filter(None, [stamp, kind, entry.step_key, pid, (entry.user_message or "")[:160], cause]))
