"""Which errors mean a service could not be reached (an outage worth waiting out), and how long to wait.

A step that talks to a database or to the MLflow server fails with a connection error while that
service is down or restarting; any other error (a data problem, a failed rule, a bug) is not one.
"""

from __future__ import annotations

from ml_assets.core.errors import chain

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
        for link in chain(error)
        for cls in type(link).__mro__
    )


def retry_delays(budget_seconds: float) -> list[float]:
    """Seconds before each retry: from FIRST_DELAY_SECONDS, doubling up to LONGEST_DELAY_SECONDS, within the budget."""
    delays, delay = [], FIRST_DELAY_SECONDS
    while sum(delays) + delay <= budget_seconds:
        delays.append(delay)
        delay = min(delay * 2, LONGEST_DELAY_SECONDS)
    return delays
