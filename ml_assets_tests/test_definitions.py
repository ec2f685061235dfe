"""The code location loads, in this process: what `dagster definitions validate` checks, in seconds
(test_cli.py runs `dg check defs` on pyproject.toml's code location in a subprocess)."""

from dagster import Definitions

from ml_assets import keys


def test_the_code_location_loads_and_every_job_resolves():
    from ml_assets.definitions import defs  # pyproject.toml's code location module

    # Unique keys and names, every resource a step requires, every partition mapping, every asset job.
    Definitions.validate_loadable(defs)
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert {"ingest_month", "retrain_month"} <= jobs.keys()
    for job in jobs.values():
        assert job.graph.node_defs, job.name
    assert set(keys.ASSETS) <= set(defs.resolve_asset_graph().get_all_asset_keys())
