"""Asset values as files under one storage root: `{root}/{asset}/{YYYY-MM}.{suffix}`.

Every write is atomic (temp file + rename), so a failed or killed step never leaves a partial
file where the next run would read it, and the previous good value stays in place.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext

from ml_assets.core.storage import atomic_path, read_json, write_json, write_table
from ml_assets.core.tables import to_pandas


class NotMaterializedError(FileNotFoundError):
    """An upstream asset partition has no stored value yet."""


class _FileIOManager(ConfigurableIOManager):
    root: str

    suffix: typing.ClassVar[str]

    def path(self, asset_key, partition: str | None) -> Path:
        return Path(self.root, *asset_key.path, f"{partition or 'value'}.{self.suffix}")

    def handle_output(self, context: OutputContext, obj) -> None:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self.path(context.asset_key, partition)
        self.write(obj, path)
        context.add_output_metadata({"path": str(path)})

    def load_input(self, context: InputContext):
        keys = context.asset_partition_keys if context.has_asset_partitions else [None]
        values = {key: self._read(context, key) for key in keys}
        if typing.get_origin(context.dagster_type.typing_type) is dict:
            return values
        (value,) = values.values()
        return value

    def _read(self, context: InputContext, partition: str | None):
        path = self.path(context.asset_key, partition)
        if not path.exists():
            name = context.asset_key.to_user_string()
            raise NotMaterializedError(
                f"{name} for {partition or 'the asset'} is not materialized yet (no file at {path}); "
                f"materialize {name} for {partition} first"
            )
        return self.read(path, context.dagster_type.typing_type, context.definition_metadata.get("columns"))

    def write(self, obj, path: Path) -> None:
        raise NotImplementedError

    def read(self, path: Path, typing_type, columns: list[str] | None = None):
        """The value at `path`; `columns` (an input's `columns` metadata) limits a table to those columns."""
        raise NotImplementedError


class ParquetIOManager(_FileIOManager):
    """pandas DataFrames, Arrow tables and parquet files (copied a batch at a time); `df.attrs` and
    dtypes (categories too) survive.

    An input whose `AssetIn` metadata names `columns` reads only those: a month's file is read
    whole by nobody who needs a few of its columns.
    """

    suffix: typing.ClassVar[str] = "parquet"

    def write(self, obj, path: Path) -> None:
        if isinstance(obj, pd.DataFrame):
            with atomic_path(path) as tmp:
                obj.to_parquet(tmp, index=False, compression="zstd")
        else:
            write_table(obj, path)

    def read(self, path: Path, typing_type, columns: list[str] | None = None):
        if typing_type is pq.ParquetFile:  # read later, a batch at a time
            return pq.ParquetFile(path)
        table = pq.read_table(path, columns=columns)
        return table if typing_type is pa.Table else to_pandas(table)


class JsonIOManager(_FileIOManager):
    suffix: typing.ClassVar[str] = "json"

    def write(self, obj, path: Path) -> None:
        write_json(obj, path)

    def read(self, path: Path, typing_type, columns: list[str] | None = None):
        return read_json(path)


class XGBoostModelIOManager(_FileIOManager):
    """Boosters in XGBoost's own UBJSON format (not pickle); attributes travel inside the file."""

    suffix: typing.ClassVar[str] = "ubj"

    def write(self, obj, path: Path) -> None:
        from ml_assets.core.training import model_bytes

        with atomic_path(path) as tmp:
            tmp.write_bytes(model_bytes(obj))

    def read(self, path: Path, typing_type, columns: list[str] | None = None):
        from ml_assets.core.training import load_booster

        return load_booster(path.read_bytes())
