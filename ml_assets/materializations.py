"""What the instance recorded of an asset: the newest materialization's run and metadata."""

from __future__ import annotations

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance


def latest_materialization(
    instance: DagsterInstance, asset: str | AssetKey, month: str | None = None
) -> tuple[str, dict] | None:
    """(run id, metadata as plain values) of the newest materialization of `asset` (for `month`, if given)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey.from_coercible(asset), asset_partitions=[month] if month else None),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    metadata = records[0].asset_materialization.metadata
    return records[0].run_id, {key: getattr(value, "value", value) for key, value in metadata.items()}


def latest_metadata(instance: DagsterInstance, asset: str | AssetKey, month: str | None = None) -> dict | None:
    """Metadata (plain values) of the newest materialization of `asset` for `month`; None if there is none."""
    latest = latest_materialization(instance, asset, month)
    return None if latest is None else latest[1]
