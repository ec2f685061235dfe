"""A step left waiting for ever beside a free slot of a concurrency pool, by a race in Dagster's claim.

`claim_concurrency_slot` (Dagster 1.13.27) first reads whether the pool has a slot no step holds, then queues the
step, assigned only if it had. A step of another run that frees the slot between the two finds no queued step to
hand it on to, and the new step is queued unassigned beside a free slot: nothing in Dagster assigns it later, and
its run waits for good (two runners racing for `champion` hung so). `PoolWatch` assigns such a step, as freeing the
slot would have.
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


class PoolWatch:
    """While a run goes on in this process (`with PoolWatch(...)`), looks at `pools` every `interval` seconds and
    assigns the first queued step of one whose steps were stranded at the last look and still are."""

    def __init__(self, instance: DagsterInstance, pools: list[str], interval: float = 5.0):
        self._instance, self._pools, self._interval = instance, pools, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pool-watch", daemon=True)

    def __enter__(self) -> PoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        seen: dict[str, frozenset] = {}
        while not self._stop.wait(self._interval):
            for pool in self._pools:
                try:
                    now = stranded_steps(self._instance, pool)
                    if now & seen.get(pool, frozenset()):
                        self._instance.event_log_storage.assign_pending_steps([pool])
                        now = frozenset()
                except Exception:  # noqa: BLE001 (a look that fails, e.g. a locked sqlite file, is tried again)
                    now = frozenset()
                seen[pool] = now
