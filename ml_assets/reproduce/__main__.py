"""Rebuild version VERSION of the home's registered model (ML_ASSETS_TAXI's: trip_duration_xgboost for green,
trip_duration_xgboost_yellow for yellow) from the data and settings that made it, and compare.

Loads the registered model first, reads the version's months from the configured source, refuses
any file whose sha256 is not the recorded one, trains again with the recorded features, params,
rounds, seeds and threads, and compares with the registered model: the same test RMSE (to 1e-9),
every test-month prediction within 1e-6, the same encoder. Writes nothing to the registry or the
asset store. Exit status: 0 when they match, 1 when they do not, 2 when the version cannot be
rebuilt or compared (one line on stderr says what was found).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from dagster import Failure
from dagster import build_resources as initialize

from ml_assets.core import tracking
from ml_assets.core.lineage import LineageError, code_identity
from ml_assets.core.reproduction import PREDICTION_TOLERANCE, RMSE_TOLERANCE, compare, rebuild
from ml_assets.core.sources import SourceError
from ml_assets.resources import build_resources


def _first_line(error: Exception) -> str:
    """What an error says, short enough for the one line that reports it (MLflow's can run to pages)."""
    return str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__


def _recorded_lineage(version) -> dict:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{tracking.LINEAGE}")
    except (MlflowException, OSError, ValueError) as error:
        raise LineageError(
            f"no {tracking.LINEAGE} found on its MLflow run {version.run_id} ({_first_line(error)}): perhaps it was "
            "registered before ml_assets recorded what made each model, or the artifact was deleted"
        ) from error


def _registered(version):
    """The registered model and its encoder, loaded before the rebuild: a version that cannot be loaded cannot be
    compared, and should say so at once rather than after minutes of training."""
    from mlflow.exceptions import MlflowException

    try:
        _, registered, encoder = tracking.load_version(version)
    except (MlflowException, OSError, ValueError) as error:  # XGBoost's and JSON's errors are ValueErrors
        raise LineageError(
            f"its registered model (models:/{version.name}/{version.version}) or the encoder.json of "
            f"its MLflow run {version.run_id} cannot be loaded: {_first_line(error)}"
        ) from error
    return registered, encoder


def reproduce(number: int) -> bool:
    """Rebuild version `number` and print what was compared; whether it matches."""
    import mlflow
    from mlflow.exceptions import MlflowException

    resources = build_resources()
    with initialize({key: resources[key] for key in ("trip_source", "mlflow")}) as initialized:
        initialized.mlflow.connect(f"version {number}")
        client, taxi, name = mlflow.MlflowClient(), initialized.mlflow.taxi, initialized.mlflow.registered_model
        try:
            version = client.get_model_version(name, str(number))
        except MlflowException as error:
            raise LineageError(f"{name} has no version {number} ({_first_line(error)})") from error
        if mixed := tracking.other_taxi(version, taxi):  # its months would be read as the wrong type's files
            raise LineageError(mixed)
        recorded = _recorded_lineage(version)
        registered, encoder = _registered(version)
        print(
            f"version {number}: tested on {recorded['test_month']}, trained on {', '.join(recorded['training_months'])}"
        )
        if recorded["code"] != (current := code_identity()):
            print(f"  code then: {recorded['code']}\n  code now:  {current}")
        frame, rebuilt = rebuild(recorded, initialized.trip_source.source().fetch, log=lambda line: print(f"  {line}"))
        result = compare(frame, rebuilt, registered, encoder, client.get_run(version.run_id).data.metrics["rmse"])
    rmses = f"registered {result.recorded_rmse:.12f}   rebuilt {result.rebuilt_rmse:.12f}"
    print(f"  test RMSE   {rmses}   (within {RMSE_TOLERANCE:g})")
    print(f"  predictions max |difference| {result.max_prediction_difference:.3g}   (within {PREDICTION_TOLERANCE:g})")
    print(f"  encoder     {'the same' if result.same_encoder else 'DIFFERENT'}")
    print("MATCH" if result.matches else "MISMATCH")
    return result.matches


def _cannot_rebuild(cause: str) -> int:
    """Say why on one line of stderr, without a traceback: the exit status (2) tells scripts the rest."""
    print(f"ml_assets.reproduce: cannot rebuild {cause}", file=sys.stderr)
    return 2


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="ml_assets.reproduce", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("version", type=int, help="a version of the registered model of ML_ASSETS_TAXI's type")
    args = parser.parse_args()
    # Its output is the comparison: MLflow's progress bars and notes on each download would bury it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401  (it sets its loggers' level when imported: set after it)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        matches = reproduce(args.version)
    except (LineageError, SourceError) as error:  # SourceError: a month the source no longer has, or cannot give
        sys.exit(_cannot_rebuild(f"version {args.version}: {error}"))
    except Failure as error:  # the store cannot be reached: its message names the version already
        sys.exit(_cannot_rebuild(error.description))
    except Exception as error:  # noqa: BLE001 (a lineage this code cannot read, a bug: no verdict, so never 1)
        traceback.print_exc()
        sys.exit(_cannot_rebuild(f"version {args.version}: {type(error).__name__}: {_first_line(error)}"))
    sys.exit(0 if matches else 1)


if __name__ == "__main__":
    main()
