"""Asset values as files under one storage root: `{root}/{asset}/{YYYY-MM}.{suffix}`.

The root is a folder or an fsspec URL (`s3://bucket/prefix`, `gs://…`, `file://…`), so that every
machine that runs steps reads what another one stored. Dagster's `UPathIOManager` maps asset
partitions to paths and loads a window of months; each write goes through `core.storage.atomic_path`
(a local file is renamed into place, an object uploaded whole), so a failed or killed step never
leaves a partial value where the next run would read it, and the previous good value stays in place.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManagerFactory, InitResourceContext, InputContext, OutputContext, UPathIOManager
from pydantic import Field
from upath import UPath

from ml_assets.core import model, storage, tables
from ml_assets.core.months import check_month


class NotMaterializedError(FileNotFoundError):
    """An upstream asset partition has no stored value yet."""


class ReadFailed(Exception):
    """A stored value is there but cannot be read (a truncated file, say); the message names the month and the file."""


class _AssetFiles(UPathIOManager):
    """One file per asset partition; subclasses say how a value is written to and read from it."""

    def make_directory(self, path: UPath) -> None:
        """Nothing to do: `atomic_path` makes local folders, and object stores have none."""

    def handle_output(self, context: OutputContext, obj) -> None:
        """As UPathIOManager stores a value, but any failure names the file and why (Dagster shows only "error
        handling output"): the store's first request is Dagster's own look for an older unpartitioned file, before
        the write, and what a store raises need not be an OSError (botocore's errors are not)."""
        try:
            super().handle_output(context, obj)
        except Exception as error:
            path = self.month_path(context)
            what = f"{context.asset_key.to_user_string()} {check_month(path.stem)}"
            raise storage.cannot_write(what, path, error) from error

    def month_path(self, context: InputContext | OutputContext) -> UPath:
        """The file of the context's month, `{root}/{asset}/{month}.{ext}`, as UPathIOManager finds it (its private
        `_get_paths_for_partitions`, which `load_input` and `handle_output` call; checked against dagster 1.13.27)."""
        (path,) = self._get_paths_for_partitions(context).values()
        return path

    def dump_to_path(self, context: OutputContext, obj, path: UPath) -> None:
        with storage.atomic_path(path) as tmp:
            self.write(obj, tmp)

    def load_from_path(self, context: InputContext, path: UPath):
        name, month = context.asset_key.to_user_string(), check_month(path.stem)  # {asset}/{month}.{ext}
        try:
            metadata = context.definition_metadata
            return self.read(path, context.dagster_type.typing_type, metadata.get("columns"), metadata.get("filters"))
        except FileNotFoundError as error:
            raise NotMaterializedError(
                f"{name} for {month} has no stored value (no file at {path}); materialize {name} for {month} "
                "(again, if Dagster shows it materialized: its stored value was deleted)"
            ) from error
        except Exception as error:  # a reader's own message names neither the month nor, read from a store, the file
            raise ReadFailed(f"cannot read {name} {month} from {path}: {error}") from error

    def load_input(self, context: InputContext):
        """As UPathIOManager loads it, but an input typed `dict[str, ...]` is a dict even for one month."""
        value = super().load_input(context)
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        if typing.get_origin(context.dagster_type.typing_type) is dict and len(keys) == 1:
            return {keys[0]: value}
        return value

    def write(self, obj, path: Path) -> None:
        """Write `obj` to the local file `path` (atomic_path then moves or uploads it)."""
        raise NotImplementedError

    def read(self, path: UPath, typing_type, columns: list[str] | None = None, filters: list | None = None):
        """The value at `path`; an input's `columns` and `filters` metadata (Arrow's row filters, e.g.
        `[("split", "==", "test")]`) limit a table to those columns and rows."""
        raise NotImplementedError


class ParquetFiles(_AssetFiles):
    """pandas DataFrames and Arrow tables; `df.attrs` and dtypes (categories too) survive."""

    extension = ".parquet"

    def write(self, obj, path: Path) -> None:
        if isinstance(obj, pd.DataFrame):
            obj.to_parquet(path, index=False, compression="zstd", row_group_size=tables.ROW_GROUP_ROWS)
        else:
            tables.write_parquet(obj, path)

    def read(self, path: UPath, typing_type, columns: list[str] | None = None, filters: list | None = None):
        if typing_type is pq.ParquetFile:  # read later, a batch at a time
            return storage.open_parquet(path)
        table = storage.read_table(path, columns=columns, filters=filters)
        return table if typing_type is pa.Table else tables.to_pandas(table)


class JsonFiles(_AssetFiles):
    extension = ".json"

    def write(self, obj, path: Path) -> None:
        path.write_text(storage.json_text(obj))

    def read(self, path: UPath, typing_type, columns: list[str] | None = None, filters: list | None = None):
        return storage.read_json(path)


class ModelFiles(_AssetFiles):
    """Models in the learner's own format (`core.model`, not pickle)."""

    extension = f".{model.FORMAT}"

    def write(self, obj, path: Path) -> None:
        path.write_bytes(model.to_bytes(obj))

    def read(self, path: UPath, typing_type, columns: list[str] | None = None, filters: list | None = None):
        return model.from_bytes(path.read_bytes())


class _StorageRoot(ConfigurableIOManagerFactory):
    root: str = Field(description="folder or fsspec URL (s3://bucket/prefix, gs://…) the asset values live under")

    files: typing.ClassVar[type[_AssetFiles]]

    def create_io_manager(self, context: InitResourceContext) -> _AssetFiles:
        return self.files(base_path=storage.location(self.root))


class ParquetIOManager(_StorageRoot):
    files: typing.ClassVar[type[_AssetFiles]] = ParquetFiles


class JsonIOManager(_StorageRoot):
    files: typing.ClassVar[type[_AssetFiles]] = JsonFiles


class ModelIOManager(_StorageRoot):
    files: typing.ClassVar[type[_AssetFiles]] = ModelFiles
