"""What a person does in the UI, done through the webserver's GraphQL API: launch a run or a backfill,
stop the sensors; and waiting for a backfill's runs to finish. The benchmarks and the deployment tests
drive a running stack (the local one, or compose's through its published port) with these."""

from __future__ import annotations

from ml_assets.automation.jobs import TRAINING_TAG

REPOSITORY = {"repositoryLocationName": "ml_assets", "repositoryName": "__repository__"}
RUN_SENSORS = ("new_month_sensor", "training_automation_sensor")  # the sensors that launch runs


def graphql(stack):
    """A GraphQL client of the webserver of `stack` (anything whose ports name the webserver's)."""
    from dagster_graphql import DagsterGraphQLClient

    return DagsterGraphQLClient("127.0.0.1", port_number=stack.ports["webserver"], timeout=60)


def launch(stack, month: str, assets: list[str] | None = None, run_config: dict | None = None) -> str:
    """A run launched from the webserver, as the UI's launchpad does, tagged to queue like automation's.
    `assets`: keys as strings, by default every asset (what "Materialize all" selects)."""
    if assets is None:
        from ml_assets import keys

        assets = [key.to_user_string() for key in keys.ASSETS]
    return graphql(stack).submit_job_execution(
        "__ASSET_JOB",
        repository_location_name="ml_assets",
        repository_name="__repository__",
        run_config=run_config or {},
        tags={"dagster/partition": month, TRAINING_TAG[0]: TRAINING_TAG[1]},
        asset_selection=assets,
    )


def stop_sensors(stack) -> None:
    """Stop the sensors that launch runs (`RUN_SENSORS`) through the webserver, as a user would in the UI;
    pool_watch_sensor, which launches none, keeps watching."""
    client = graphql(stack)
    found = client._execute(
        """query Sensors($repository: RepositorySelector!) { sensorsOrError(repositorySelector: $repository) {
             ... on Sensors { results { id name } } } }""",
        {"repository": REPOSITORY},
    )["sensorsOrError"]["results"]
    ids = {sensor["name"]: sensor["id"] for sensor in found}
    if not set(RUN_SENSORS) <= set(ids):
        raise RuntimeError(f"expected the code location's sensors {RUN_SENSORS}, found {found}")
    for name in RUN_SENSORS:
        stopped = client._execute(
            """mutation Stop($id: String!) { stopSensor(id: $id) { __typename
                 ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }""",
            {"id": ids[name]},
        )["stopSensor"]
        if stopped.get("instigationState", {}).get("status") != "STOPPED":
            raise RuntimeError(f"sensor {name} not stopped: {stopped}")


def backfill(stack, job: str, months: list[str], tags: dict | None = None, config: dict | None = None) -> str:
    """A backfill of `job` over `months`, launched from the webserver as the UI's backfill dialog does."""
    launched = graphql(stack)._execute(
        """mutation Backfill($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
             __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {
            "params": {
                "selector": {"partitionSetName": f"{job}_partition_set", "repositorySelector": REPOSITORY},
                "partitionNames": months,
                "tags": [{"key": key, "value": value} for key, value in (tags or {}).items()],
                "runConfigData": config or {},
                # The runs are queued at once, not at the backfill daemon's next iteration (30 s).
                "forceSynchronousSubmission": True,
            }
        },
    )["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill of {job} not launched: {launched}")
    return launched["backfillId"]


def finished_runs(topology, instance, backfill_id: str, count: int, seconds: float) -> list:
    """The `count` runs of the backfill, once all of them have finished (a Topology's wait_for: it fails
    early, with the logs, when a service died)."""
    from dagster import RunsFilter

    def runs():
        return instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))

    topology.wait_for(
        lambda: len(runs()) == count and all(run.is_finished for run in runs()), f"backfill {backfill_id}", seconds
    )
    return runs()
