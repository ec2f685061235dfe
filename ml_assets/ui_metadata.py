"""Metadata an operator reads in the Dagster UI: plots, MLflow links, row counts, column schemas, previews."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
from dagster import DagsterLogManager, MetadataValue, TableColumn, TableSchema

from ml_assets.core import tables
from ml_assets.core.credentials import without_userinfo
from ml_assets.core.plots import Plot, draw_all

DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
PREVIEW_ROWS = 5

Log = DagsterLogManager | logging.Logger


@dataclass(frozen=True)
class RenderedPlots:
    pngs: dict[str, bytes]
    missing: dict[str, str]  # plot name -> why there is no plot

    def metadata(self) -> dict[str, MetadataValue]:
        """`plot_<name>` entries: Markdown with the PNG inline (Dagster 1.13 has no image metadata type)."""
        entries = {f"plot_{name}": MetadataValue.md(_inline_png(name, png)) for name, png in self.pngs.items()}
        entries.update({f"plot_{name}": MetadataValue.md(f"No plot: {why}") for name, why in self.missing.items()})
        return entries


def _inline_png(name: str, png: bytes) -> str:
    return f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"


def render_plots(figures: Mapping[str, Plot], log: Log) -> RenderedPlots:
    """Draw every plot; one that fails is reported, never raised: a plot is not worth a failed materialization."""
    return RenderedPlots(*draw_all(figures, log))


def plot_metadata(plots: Mapping[str, Plot], log: Log) -> dict[str, MetadataValue]:
    return render_plots(plots, log).metadata()


def mlflow_ui_url(configured: str | None, tracking_uri: str | None) -> str:
    """The configured MLflow UI, else an http(s) tracking server itself, else where `make mlflow` serves;
    never with a user or password (a browser asks for them, and metadata is no place for them)."""
    if configured:
        return without_userinfo(configured).rstrip("/")
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return without_userinfo(tracking_uri).rstrip("/")
    return DEFAULT_MLFLOW_UI_URL


def mlflow_run_link(ui_url: str, experiment_id: str, run_id: str) -> MetadataValue:
    return MetadataValue.url(f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}")


def model_version_link(ui_url: str, model_name: str, version: str) -> MetadataValue:
    return MetadataValue.url(f"{ui_url}/#/models/{model_name}/versions/{version}")


def row_count_entry(rows: int) -> dict:
    return {"dagster/row_count": MetadataValue.int(int(rows))}


def table_metadata(table: tables.TableOrFile | pd.DataFrame) -> dict:
    """Dagster's standard row count and column schema (the UI's Columns view)."""
    if isinstance(table, pd.DataFrame):
        schema, rows = pa.Schema.from_pandas(table, preserve_index=False), len(table)
    else:
        schema, rows = tables.schema(table), tables.num_rows(table)
    columns = [TableColumn(field.name, str(field.type)) for field in schema]
    return {**row_count_entry(rows), "dagster/column_schema": MetadataValue.table_schema(TableSchema(columns=columns))}


def preview(frame: pd.DataFrame, rows: int = PREVIEW_ROWS) -> MetadataValue:
    return MetadataValue.md(frame.head(rows).to_markdown(index=False))
