"""Steps wait out an unreachable service instead of failing the month.

A step that talks to the MLflow tracking server or to a database (optuna's studies, MLflow's own
store) fails with a connection error while that service is down or restarting. `waits_out_outages`
turns such an error into a Dagster retry of the step (`RetryRequested`) after 5 s, then twice as
long each time up to 5 minutes, until ML_ASSETS_OUTAGE_SECONDS have been waited: the month is done
once the service is back, without an operator. Only then does the step fail, with the service's own
error. Any other error (a data problem, a failed rule, a bug) fails the step at once, as before:
Dagster's RetryPolicy cannot tell them apart, it retries every exception.

Runs waiting for Celery's broker are ml_assets.execution's; a run whose process died with its
code server or with PostgreSQL is failed by run monitoring and retried (deploy/dagster.yaml).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

from dagster import RetryRequested

from ml_assets import settings

FIRST_DELAY_SECONDS, LONGEST_DELAY_SECONDS = 5, 300

# (top-level module, class name) of the errors a client raises when its server cannot be reached or
# is unavailable; an error counts if any class of its MRO, or of an error it was raised from, is here.
OUTAGE_ERRORS = {
    ("builtins", "ConnectionError"),  # refused, reset, aborted
    ("builtins", "TimeoutError"),
    ("socket", "gaierror"),  # a stopped container's name no longer resolves
    ("requests", "ConnectionError"),  # MLflow's HTTP client
    ("requests", "Timeout"),
    ("requests", "RetryError"),  # the server answered 5xx until MLflow's client gave up
    # PostgreSQL (optuna's studies) down, restarting or gone mid-query, as SQLAlchemy raises it from the
    # driver's error; not SQLAlchemy's OperationalError as such, which sqlite also raises for a missing
    # table or an unreadable file (make run's stores), where waiting would not help.
    ("psycopg2", "OperationalError"),
    ("psycopg2", "InterfaceError"),
    ("sqlalchemy", "DisconnectionError"),
}


def is_outage(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from or during, says a service could not be reached."""
    return any(
        (cls.__module__.split(".")[0], cls.__name__) in OUTAGE_ERRORS
        for link in _chain(error)
        for cls in type(link).__mro__
    )


def retry_delays(budget_seconds: float) -> list[float]:
    """Seconds before each retry: from FIRST_DELAY_SECONDS, doubling up to LONGEST_DELAY_SECONDS, within the budget."""
    delays, delay = [], FIRST_DELAY_SECONDS
    while sum(delays) + delay <= budget_seconds:
        delays.append(delay)
        delay = min(delay * 2, LONGEST_DELAY_SECONDS)
    return delays


def waits_out_outages(compute: Callable) -> Callable:
    """A step's compute function (its context first) whose outage errors retry the step after a delay."""

    @functools.wraps(compute)
    def step(context, *args, **kwargs):
        try:
            return compute(context, *args, **kwargs)
        except Exception as error:
            delays = retry_delays(settings.OUTAGE_SECONDS.value())
            attempt = context.op_execution_context.retry_number
            if attempt >= len(delays) or not is_outage(error):
                raise
            said = (str(error) or type(error).__name__).splitlines()[0][:300]
            context.log.warning(
                f"a service is unreachable ({said}); retry {attempt + 1} of {len(delays)} in {delays[attempt]} s"
            )
            raise RetryRequested(max_retries=len(delays), seconds_to_wait=delays[attempt]) from error

    return step


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__
