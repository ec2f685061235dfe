"""What the instance recorded of an asset partition: the newest materialization's metadata."""
from __future__ import annotations

from typing import Optional

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance


def latest_metadata(instance: DagsterInstance, asset: str | AssetKey, month: str) -> Optional[dict]:
    """Metadata (plain values) of the newest materialization of `asset` for `month`; None if there is none."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey.from_coercible(asset), asset_partitions=[month]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    return {key: getattr(value, "value", value) for key, value in records[0].asset_materialization.metadata.items()}
