"""A step left waiting for ever beside a free slot of a concurrency pool, by a race in Dagster's claim.

`claim_concurrency_slot` (Dagster 1.13.27) first reads whether the pool has a slot no step holds, then queues the
step, assigned only if it had. A step of another run that frees the slot between the two finds no queued step to
hand it on to, and the new step is queued unassigned beside a free slot: nothing in Dagster assigns it later, and
its run waits for good (two runners racing for `champion` hung so). Such a step is assigned the slot, as freeing it
would have: by `PoolWatch` in the runner's process, and by `pool_watch_sensor` where a daemon launches the runs.
"""

from __future__ import annotations

import threading

from dagster import DagsterInstance


def stranded_steps(instance: DagsterInstance, pool: str) -> frozenset[tuple[str, str]]:
    """(run, step) of the steps queued in `pool` while none holds a slot or is assigned one though the pool has
    slots; empty otherwise. Freeing a slot assigns the next step within milliseconds: seen twice, they are stranded."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    if not info.slot_count or info.claimed_slots or any(step.assigned_timestamp for step in info.pending_steps):
        return frozenset()
    return frozenset((step.run_id, step.step_key) for step in info.pending_steps)


def assign_stranded(instance: DagsterInstance, pool: str, seen: frozenset) -> tuple[frozenset, frozenset]:
    """Assigns the first queued step of `pool` where its steps are stranded now and were at the last look (`seen`):
    (what to pass as `seen` at the next look, the stranded steps it assigned the slot among)."""
    now = stranded_steps(instance, pool)
    if now & seen:
        instance.event_log_storage.assign_pending_steps([pool])
        return frozenset(), now
    return now, frozenset()


class PoolWatch:
    """While a run goes on in this process (`with PoolWatch(...)`), looks at `pool` every `interval` seconds."""

    def __init__(self, instance: DagsterInstance, pool: str, interval: float = 5.0):
        self._instance, self._pool, self._interval = instance, pool, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pool-watch", daemon=True)

    def __enter__(self) -> PoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        seen = frozenset()
        while not self._stop.wait(self._interval):
            try:
                seen, _ = assign_stranded(self._instance, self._pool, seen)
            except Exception:  # noqa: BLE001 (a look that fails, e.g. on a locked sqlite file, is tried again)
                seen = frozenset()
