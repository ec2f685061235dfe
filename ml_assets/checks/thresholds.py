"""Run config made from a thresholds dataclass of `core`, so that each threshold is declared only there."""

from __future__ import annotations

import dataclasses

import pydantic
from dagster import Config

from ml_assets.settings import Setting


def thresholds_config(name: str, thresholds: type, settings: dict[str, Setting], doc: str) -> type[Config]:
    """A Config with a field per threshold: its default is its ML_ASSETS_* variable, else the dataclass's, and
    it allows what the variable allows."""
    fields = {
        field.name: (type(field.default), settings[field.name].field(field.metadata["description"]))
        for field in dataclasses.fields(thresholds)
    }
    return pydantic.create_model(name, __base__=Config, __doc__=doc, **fields)
