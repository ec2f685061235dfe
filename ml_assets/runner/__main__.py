"""Materialize the whole graph for a month, or a range of months in order, then report the models.

`make run` (one month) and `make backfill` (a range) call this. It prints a line per finished step
and the models; Dagster's whole event log goes to a file under $DAGSTER_HOME (`-v` or VERBOSE=1
prints it instead). A failed step ends it with a non-zero status.
"""

from __future__ import annotations

import argparse
import sys

from ml_assets import settings
from ml_assets.core.credentials import said
from ml_assets.core.months import check_month
from ml_assets.core.storage import out_of_space, space_left
from ml_assets.partitions import START_MONTH, monthly_partitions
from ml_assets.runner.console import event_log_path, run_loggers
from ml_assets.runner.runs import RunFailed, open_instance, run
from ml_assets.runner.signals import interrupt_as_in_a_terminal


def _partition(raw: str) -> str:
    """A month argument: a partition key of this code location, else argparse's usage error naming it."""
    try:
        month = check_month(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a month YYYY-MM") from None
    if month < START_MONTH:
        raise argparse.ArgumentTypeError(f"{month} is before the first partition, {START_MONTH}")
    last = monthly_partitions.get_last_partition_key()  # the last whole month: it moves with the clock
    if month > last:
        raise argparse.ArgumentTypeError(f"{month} is after the last partition, {last} (the last month that has ended)")
    return month


def _failure(error: Exception) -> str:
    """What failed; on a full disk, where and how much room is left, since the instance cannot say it."""
    if not out_of_space(error):
        return str(error)
    home = settings.state_dir().parent
    what = str(error) if isinstance(error, RunFailed) else f"{type(error).__name__}: {said(error, limit=1000)}"
    return (
        f"{what}\nOut of disk space? DAGSTER_HOME ({home}) has {space_left(home)} on its filesystem. "
        "Free some and run again: the next run marks what this one left unfinished failed."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="ml_assets.runner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "month", nargs="?", type=_partition, default="2021-02", help="partition key YYYY-MM (the first, for a range)"
    )
    parser.add_argument("--to", type=_partition, help="last month of a range (inclusive)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=settings.VERBOSE.value(),
        help=f"print Dagster's whole event log (default when {settings.VERBOSE.variable} is set)",
    )
    args = parser.parse_args()
    if args.to is not None and args.to < args.month:
        parser.error(f"argument --to: {args.to} is before the first month, {args.month}")
    interrupt_as_in_a_terminal()  # or, started in the background, it would ignore SIGTERM between months
    log_file = event_log_path(settings.state_dir())
    print(f"Dagster event log: {log_file}")
    try:
        with open_instance() as instance, run_loggers(log_file, sys.stdout, args.verbose) as loggers:
            models = run(args.month, args.to or args.month, instance, loggers=loggers)
    except Exception as error:  # a failed step, or the instance itself failing (a full disk)
        if not isinstance(error, RunFailed) and not out_of_space(error):
            raise
        sys.exit(f"\nFAILED {_failure(error)}\n(the whole event log is in {log_file})")
    for month, model in models.items():
        print(f"\ntrained_model {month}")
        print(f"  model file      {model['path']}")
        print(f"  test RMSE       {model['rmse']:.3f} min   (LinearRegression baseline {model['baseline_rmse']:.3f})")
        print(f"  MLflow run      {model['mlflow_run']}")
        print(f"  MLflow model    {model['registered_model']}  (v{model['model_version']}, {model['alias']})")


if __name__ == "__main__":
    main()
