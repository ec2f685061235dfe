"""Asset values and the download cache in an object store: S3 (moto) and Google Cloud Storage (its
emulator) on 127.0.0.1 (see ml_assets_tests/object_stores.py), written and read by the real s3fs and
gcsfs clients through universal-pathlib. Every test that takes `bucket` runs once per store."""

from __future__ import annotations

import json
import secrets
import signal
import tempfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, PythonObjectDagsterType, build_input_context, build_output_context

from ml_assets.core import tracking
from ml_assets.core.errors import chain
from ml_assets.core.sources import SourceUnavailableError
from ml_assets.core.sources.tlc import TlcSource
from ml_assets.core.storage import WriteFailed, atomic_path, location, read_json, read_table, write_json
from ml_assets.deploy.local.mlflow_server import mlflow_env
from ml_assets.deploy.local.proc import process_table
from ml_assets.deploy.local.service import Service
from ml_assets.partitions import monthly_partitions
from ml_assets.records import latest_metadata
from ml_assets.resources.io_managers import (
    JsonIOManager,
    ModelIOManager,
    NotMaterializedError,
    ParquetIOManager,
    ReadFailed,
)
from ml_assets.runner.runs import materialize_month, missing_values, run
from ml_assets_tests.object_stores import start_store
from ml_assets_tests.support import TLC_DATA, free_port, holding, start_writer, wait_until_answers

ASSETS = {  # asset -> file suffix
    "raw_trips": "parquet",
    "cleaned_trips": "parquet",
    "trip_features": "parquet",
    "best_params": "json",
    "trained_model": "ubj",
    "trip_duration_predictions": "parquet",
    "model_performance": "parquet",
}
INGESTION = ("raw_trips", "cleaned_trips")
# Where values are stored is what counts here, not the model: the smallest budgets.
TINY = {
    "ops": {
        "best_params": {"config": {"n_trials": 1, "timeout_seconds": 20, "num_boost_round": 30}},
        "trained_model": {"config": {"num_boost_round": 30, "early_stopping_rounds": 10}},
    }
}


@pytest.fixture
def staging(tmp_path, monkeypatch):
    """This test's own TMPDIR (here and in the processes it starts), where uploads are staged."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def staged_files(folder) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


def load(io_manager, asset: str, month: str, typing_type):
    """A stored value read back as a downstream step reads it."""
    context = build_input_context(
        asset_key=AssetKey(asset),
        partition_key=month,
        asset_partitions_def=monthly_partitions,
        dagster_type=PythonObjectDagsterType(typing_type),
    )
    return io_manager.create_io_manager(None).load_input(context)


def store(io_manager, asset: str, month: str, value) -> str:
    """Store `value` as the asset's step would; the `path` it records."""
    context = build_output_context(
        asset_key=AssetKey(asset), partition_key=month, asset_partitions_def=monthly_partitions
    )
    io_manager.create_io_manager(None).handle_output(context, value)
    return context.get_logged_metadata()["path"].value


def round_trip(root: str, staging) -> None:
    """Values of every kind stored under `root` read back as stored, and nothing stays staged."""
    parquet, json_files = ParquetIOManager(root=root), JsonIOManager(root=root)
    frame = pd.DataFrame({"PULocationID": pd.Categorical([7, 7, 200]), "duration": [3.0, 12.5, 30.0]})
    frame.attrs["feature_set"] = "rich"
    table = pa.table({"trip_distance": [1.5, None, 3.0]})

    assert store(parquet, "trip_features", "2021-02", frame) == f"{root}/trip_features/2021-02.parquet"
    assert store(parquet, "raw_trips", "2021-02", table) == f"{root}/raw_trips/2021-02.parquet"
    assert store(json_files, "best_params", "2021-02", {"max_depth": 6}) == f"{root}/best_params/2021-02.json"

    loaded = load(parquet, "trip_features", "2021-02", pd.DataFrame)
    pd.testing.assert_frame_equal(loaded, frame)
    assert loaded.attrs == {"feature_set": "rich"}
    assert load(parquet, "raw_trips", "2021-02", pa.Table).equals(table)
    assert load(json_files, "best_params", "2021-02", dict) == {"max_depth": 6}
    assert staged_files(staging) == []


@pytest.mark.parametrize("kind", ["path", "file URL"])
def test_values_round_trip_under_a_local_root(kind, tmp_path, staging):
    folder = tmp_path / "assets"
    round_trip({"path": str(folder), "file URL": folder.as_uri()}[kind], staging)
    written = sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))
    expected = ["best_params", "best_params/2021-02.json", "raw_trips", "raw_trips/2021-02.parquet"]
    assert written == sorted([*expected, "trip_features", "trip_features/2021-02.parquet"])  # no temporary file


@pytest.mark.process
def test_values_round_trip_in_an_object_store(bucket, staging):
    round_trip(f"{bucket.url}/assets", staging)
    assert bucket.keys() == [
        "assets/best_params/2021-02.json",
        "assets/raw_trips/2021-02.parquet",
        "assets/trip_features/2021-02.parquet",
    ]


@pytest.mark.process
def test_a_backfill_stores_every_value_as_an_object_under_the_prefix_and_nothing_locally(
    bucket, dagster_home, staging, monkeypatch
):
    root, cache = f"{bucket.url}/assets", f"{bucket.url}/downloads"
    monkeypatch.setenv("ML_ASSETS_STORAGE_ROOT", root)
    monkeypatch.setenv("ML_ASSETS_CACHE_DIR", cache)
    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", "5000")
    with DagsterInstance.get() as instance:
        models = run("2021-02", "2021-03", instance, run_config=TINY)
        assert set(models) == {"2021-02", "2021-03"}
        expected = {
            f"assets/{asset}/{month}.{suffix}"
            for asset, suffix in ASSETS.items()
            for month in (["2021-01", "2021-02", "2021-03"] if asset in INGESTION else ["2021-02", "2021-03"])
        }
        assert set(bucket.keys("assets/")) == expected
        assert bucket.keys("downloads/") == [f"downloads/synthetic/green_tripdata_2021-0{n}.parquet" for n in (1, 2, 3)]
        for key in expected:  # what Dagster recorded is where the object is
            _, asset, file = key.split("/")
            assert latest_metadata(instance, asset, file.split(".")[0])["path"] == f"{bucket.url}/{key}"
        rows = latest_metadata(instance, "cleaned_trips", "2021-03")["rows"]
        params = latest_metadata(instance, "best_params", "2021-03")["params"]

    # Nothing went to the local storage root or download cache, and no staged upload was left behind.
    state = dagster_home / "ml_assets"
    assert not (state / "assets").exists() and not (state / "downloads").exists()
    assert staged_files(staging) == []

    # The values read back as the steps read them: dtypes and attrs, a window as a dict, the model.
    parquet = ParquetIOManager(root=root)
    cleaned = load(parquet, "cleaned_trips", "2021-03", pd.DataFrame)
    assert cleaned["PULocationID"].dtype == "category" and len(cleaned) == rows
    assert load(parquet, "trip_features", "2021-03", pd.DataFrame).attrs["feature_set"] == "rich"
    assert load(JsonIOManager(root=root), "best_params", "2021-03", dict) == params
    booster = load(ModelIOManager(root=root), "trained_model", "2021-03", object)
    assert booster.num_boosted_rounds() > 0


@pytest.mark.process
def test_the_runner_asks_the_object_store_which_recorded_months_have_a_value(bucket, instance, monkeypatch):
    """What `make run` re-ingests when the instance records a month whose value is gone (test_faults_instance.py),
    with the values in an object store: the months without an object, named by where the IO manager looked."""
    root = f"{bucket.url}/assets"
    monkeypatch.setenv("ML_ASSETS_STORAGE_ROOT", root)
    store(ParquetIOManager(root=root), "cleaned_trips", "2021-01", pa.table({"duration": [3.0]}))
    missing = missing_values(instance, AssetKey("cleaned_trips"), ["2021-01", "2021-02"])
    assert {month: str(path) for month, path in missing.items()} == {"2021-02": f"{root}/cleaned_trips/2021-02.parquet"}


@pytest.mark.process
def test_a_killed_write_leaves_the_previous_object_and_a_retry_replaces_it(bucket, staging):
    key = "assets/best_params/2021-02.json"
    url = f"{bucket.url}/{key}"
    write_json({"version": 1}, url)

    writer = start_writer(url)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert len(staged_files(staging)) == 1, "the killed writer's staged file stays in TMPDIR"
    assert bucket.keys() == [key]
    assert read_json(url) == {"version": 1}

    write_json({"version": 2}, url)  # a plain retry: uploads, and removes the dead writer's staged file
    assert bucket.keys() == [key]
    assert read_json(url) == {"version": 2}
    assert staged_files(staging) == []


@pytest.mark.process
def test_a_failed_write_leaves_no_object_and_the_month_is_named_as_missing(bucket, staging):
    root = f"{bucket.url}/assets"
    with pytest.raises(RuntimeError, match="serialization failed"):
        with atomic_path(f"{root}/best_params/2021-02.json") as tmp:
            tmp.write_text('{"max_depth": ')
            raise RuntimeError("serialization failed")
    assert bucket.keys() == []
    assert staged_files(staging) == []

    with pytest.raises(NotMaterializedError) as error:
        load(JsonIOManager(root=root), "best_params", "2021-02", dict)
    assert str(error.value) == (
        f"best_params for 2021-02 has no stored value (no file at {root}/best_params/2021-02.json); "
        "materialize best_params for 2021-02 (again, if Dagster shows it materialized: its stored value was deleted)"
    )


@pytest.mark.process
@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_a_password_in_the_storage_url_reaches_the_store_only(bucket, dagster_home, staging, monkeypatch):
    """`s3://KEY:SECRET@bucket/…`: the store's client logs in with them; the run's logs, metadata and errors show
    the location without them."""
    secret = f"S3cret-{secrets.token_hex(8)}"
    monkeypatch.setenv("ML_ASSETS_STORAGE_ROOT", f"s3://testing:{secret}@{bucket.name}/assets")
    monkeypatch.setenv("ML_ASSETS_CACHE_DIR", f"s3://testing:{secret}@{bucket.name}/downloads")
    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", "5000")
    with DagsterInstance.get() as instance:
        result = materialize_month(instance, "2021-01", list(INGESTION), raise_on_error=False)
        assert result.success
        assert (
            latest_metadata(instance, "raw_trips", "2021-01")["path"]
            == f"{bucket.url}/assets/raw_trips/2021-01.parquet"
        )
    stored = sorted(f"assets/{asset}/2021-01.parquet" for asset in INGESTION)
    assert bucket.keys() == [*stored, "downloads/synthetic/green_tripdata_2021-01.parquet"]
    assert location(f"s3://testing:{secret}@{bucket.name}/assets").fs.secret == secret
    assert holding([f"{bucket.url}/assets/raw_trips/2021-01.parquet"], dagster_home), "the run logged the location"
    assert holding([secret], dagster_home) == []


def test_a_secret_with_a_slash_in_an_s3_url_is_the_store_s_and_shown_masked(monkeypatch):
    """AWS secret keys often hold `/`: `s3://KEY:SEC/RET@bucket` was taken as the bucket `KEY:SEC`, accepted when the
    code location loaded, and every path and message showed the secret."""
    from ml_assets import settings
    from ml_assets.core.credentials import mask

    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    url = f"s3://AKIAIOSFODNN7EXAMPLE:{secret}@bucket/assets"
    monkeypatch.setenv("ML_ASSETS_STORAGE_ROOT", url)
    assert settings.STORAGE_ROOT.value() == url
    root = location(url)
    assert str(root / "raw_trips") == "s3://bucket/assets/raw_trips"
    assert (root.fs.key, root.fs.secret) == ("AKIAIOSFODNN7EXAMPLE", secret)
    assert mask(f"cannot write raw_trips 2021-01 to {url}") == (
        "cannot write raw_trips 2021-01 to s3://AKIAIOSFODNN7EXAMPLE:***@bucket/assets"
    )


@pytest.mark.parametrize("typing_type", [pd.DataFrame, pq.ParquetFile])
def test_a_truncated_stored_month_fails_reading_naming_the_month_and_the_file(typing_type, tmp_path):
    root = str(tmp_path / "assets")
    path = store(ParquetIOManager(root=root), "cleaned_trips", "2021-02", pa.table({"duration": [3.0, 12.5]}))
    data = (tmp_path / "assets" / "cleaned_trips" / "2021-02.parquet").read_bytes()
    (tmp_path / "assets" / "cleaned_trips" / "2021-02.parquet").write_bytes(data[: len(data) // 2])

    with pytest.raises(ReadFailed) as error:
        load(ParquetIOManager(root=root), "cleaned_trips", "2021-02", typing_type)
    assert str(error.value).startswith(f"cannot read cleaned_trips 2021-02 from {path}: ")
    assert "Parquet" in str(error.value), "the reader's own reason follows"


@pytest.fixture
def unreachable_s3(monkeypatch) -> str:
    """An S3 endpoint nothing answers on (one try per request): botocore raises its own errors, not OSError."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # a cached client would keep another test's endpoint
    yield "s3://ml-assets-unreachable/assets"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.parametrize("password", [None, "S3cret-unreachable"])
def test_a_store_that_cannot_be_reached_fails_the_write_naming_the_file(password, unreachable_s3):
    root = unreachable_s3 if password is None else unreachable_s3.replace("s3://", f"s3://testing:{password}@")
    with pytest.raises(WriteFailed) as error:
        store(JsonIOManager(root=root), "best_params", "2021-02", {"max_depth": 6})
    assert str(error.value).startswith(
        f"cannot write best_params 2021-02 to {unreachable_s3}/best_params/2021-02.json: Could not connect to the "
        "endpoint URL"
    )
    assert password is None or not [link for link in chain(error.value) if password in str(link)]


@pytest.fixture
def refusing_s3(tmp_path, monkeypatch):
    """A moto server that checks every request's credentials against its IAM after its first four (a bucket,
    and a user with a key allowed everything on S3): a real store refusing a key it does not know."""
    import boto3
    import s3fs

    with start_store("s3", tmp_path / "moto_server.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as server:
        for name, value in {**server.env(), "AWS_MAX_ATTEMPTS": "1"}.items():
            monkeypatch.setenv(name, value)
        bucket = server.new_bucket()
        iam = boto3.client("iam", endpoint_url=server.endpoint_url, region_name="us-east-1")
        iam.create_user(UserName="pipeline")
        key = iam.create_access_key(UserName="pipeline")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="pipeline", PolicyName="s3", PolicyDocument=json.dumps(policy))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        s3fs.S3FileSystem.clear_instance_cache()
        yield server, bucket
        s3fs.S3FileSystem.clear_instance_cache()


def stored_keys(server, bucket: str) -> list[str]:
    """The bucket's keys, listed with the key of the environment (the pipeline's)."""
    import boto3

    # A new session: boto3's default one keeps the credentials it first found, another test's.
    client = boto3.session.Session().client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
    listing = client.list_objects_v2(Bucket=bucket)
    return sorted(entry["Key"] for entry in listing.get("Contents", []))


@pytest.mark.process
def test_a_store_that_refuses_the_key_fails_the_write_naming_the_file(refusing_s3):
    server, bucket = refusing_s3
    secret = f"S3cret-{secrets.token_hex(8)}"
    root = f"s3://nosuchkey:{secret}@{bucket}/assets"
    with pytest.raises(WriteFailed) as error:
        store(JsonIOManager(root=root), "best_params", "2021-02", {"max_depth": 6})
    assert str(error.value).startswith(
        f"cannot write best_params 2021-02 to s3://{bucket}/assets/best_params/2021-02.json: "
    )
    assert str(error.value).endswith(": Forbidden")  # s3fs's word for the store's 403
    assert any(isinstance(link, PermissionError) for link in chain(error.value))
    assert not [link for link in chain(error.value) if secret in str(link)]
    assert stored_keys(server, bucket) == []

    # The same write with the key the store knows, from the environment as the AWS_* variables give it.
    store(JsonIOManager(root=f"s3://{bucket}/assets"), "best_params", "2021-02", {"max_depth": 6})
    assert stored_keys(server, bucket) == ["assets/best_params/2021-02.json"]


@pytest.mark.process
def test_the_download_cache_in_an_object_store_takes_whole_files_only(bucket, tlc_server, staging):
    name = "green_tripdata_2021-01.parquet"
    cache = f"{bucket.url}/downloads/tlc"
    source = TlcSource(cache_dir=cache, base_url=tlc_server.url, retries=1, backoff_seconds=0.01, timeout_seconds=2.0)

    tlc_server.script = ["serve", "disconnect", "disconnect"]  # the probe, then two GETs cut short
    with pytest.raises(SourceUnavailableError):
        source.fetch("2021-01")
    assert bucket.keys() == []

    path = source.fetch("2021-01")  # a plain retry
    assert str(path) == f"{cache}/{name}"
    assert bucket.read(f"downloads/tlc/{name}") == (TLC_DATA / name).read_bytes()
    assert bucket.keys() == [f"downloads/tlc/{name}", f"downloads/tlc/{name}.fingerprint.json"]
    assert read_table(path).num_rows == pq.read_metadata(TLC_DATA / name).num_rows
    assert staged_files(staging) == []

    requests = len(tlc_server.requests)
    assert str(source.fetch("2021-01")) == str(path)  # cached: a probe, no download
    assert [r.method for r in tlc_server.requests[requests:]] == ["HEAD"]


@pytest.mark.process
def test_the_mlflow_server_stores_a_model_s_artifacts_in_the_object_store(bucket, tmp_path, monkeypatch):
    """As deploy/service.sh runs it (--serve-artifacts): clients upload over HTTP, the server writes to the store."""
    import mlflow
    import numpy as np
    import xgboost

    port = free_port()
    env = mlflow_env(port, f"sqlite:///{tmp_path / 'mlflow.db'}", f"{bucket.url}/mlartifacts", bucket.server.env())
    server = Service("mlflow", env, tmp_path / "mlflow.log", cwd=tmp_path)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{url}/health", lambda: server.running, server.log)
        session = [pid for pid, stat in process_table().items() if stat.session == server.process.pid]
        assert session == [server.process.pid], "uvicorn serves in the process that set it up (mlflow_server.py)"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        features = np.random.default_rng(0).random((50, 3))
        matrix = xgboost.DMatrix(features, label=features.sum(axis=1))
        # With early stopping, as core.model.fit trains every model the project logs (it predicts up to the best round).
        booster = xgboost.train(
            {"max_depth": 2}, matrix, 5, evals=[(matrix, "valid")], early_stopping_rounds=5, verbose_eval=False
        )
        # An experiment of this server's own: the process's active one may be another test's.
        with mlflow.start_run(experiment_id=mlflow.create_experiment("artifacts")):
            logged = tracking.log_trained_model(
                params={"max_depth": 2},
                metrics={"rmse": 0.1},
                trained=booster,
                encoder={"feature_set": "test"},
                lineage={},
                input_example=features[:5],
            )
        run = mlflow.get_run(logged["run_id"])
    finally:
        server.stop()
        mlflow.set_tracking_uri(None)

    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # the client wrote nothing to the store itself
    stored = bucket.keys("mlartifacts/")
    assert any(logged["run_id"] in key and key.endswith("/encoder.json") for key in stored), stored
    model_id = logged["model_uri"].removeprefix("models:/")
    assert any(key.endswith(f"/models/{model_id}/artifacts/model.ubj") for key in stored), stored
    assert not (tmp_path / "mlartifacts").exists()
