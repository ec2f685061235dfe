"""What a trip's zones say without any fitting: whether TLC has such a zone, its borough and airport, from the
TLC zone lookup shipped with the package.

`data/zones.csv` is the part of TLC's `taxi_zone_lookup.csv` the pipeline needs (zone id, borough, and
whether the zone is an airport: Newark, JFK, LaGuardia); TLC publishes it as NYC open data. Its ids are
every zone TLC knows, its own unknown zones (264, 265) included; cleaning drops trips in any other.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from ml_assets.core.schema import PICKUP_ZONE, ZONE_COLUMNS

LOOKUP = Path(__file__).parent / "data" / "zones.csv"
# Borough codes: an id the lookup does not know gets the code of "Unknown", as TLC's own unknown zones do.
BOROUGHS = ("Bronx", "Brooklyn", "EWR", "Manhattan", "Queens", "Staten Island", "Unknown")
FLAG_COLUMNS = ("pu_borough", "do_borough", "pu_airport", "do_airport", "same_borough")


@cache
def _rows() -> list[dict[str, str]]:
    with LOOKUP.open(newline="") as file:
        return list(csv.DictReader(file))


@cache
def known_zones() -> np.ndarray:
    """The lookup's zone ids (int32, as the canonical schema's zones): a trip in another id names no place."""
    return np.array(sorted(int(row["LocationID"]) for row in _rows()), dtype=np.int32)


@cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Borough code and airport flag per zone id (index = id)."""
    rows = _rows()
    size = max(int(row["LocationID"]) for row in rows) + 1
    borough = np.full(size, BOROUGHS.index("Unknown"), dtype=np.int8)
    airport = np.zeros(size, dtype=np.int8)
    for row in rows:
        zone = int(row["LocationID"])
        borough[zone] = BOROUGHS.index(row["Borough"])
        airport[zone] = int(row["airport"])
    return borough, airport


def zone_ids(column: pd.Series) -> np.ndarray:
    """Zone ids as int64, -1 where missing (categorical or numeric column)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        ids = column.cat.categories.to_numpy().astype(np.int64)[np.maximum(codes, 0)]
        return np.where(codes >= 0, ids, -1)
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(values), -1, values).astype(np.int64)


def zone_flags(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per row: pickup and dropoff borough codes (int8, see BOROUGHS), airport flags, and whether both zones
    are in one borough."""
    borough, airport = _tables()
    unknown = np.int8(BOROUGHS.index("Unknown"))
    flags = {}
    for zone in ZONE_COLUMNS:
        prefix = "pu" if zone == PICKUP_ZONE else "do"
        ids = zone_ids(rows[zone])
        known = (ids >= 0) & (ids < len(borough))
        at = np.where(known, ids, 0)
        flags[f"{prefix}_borough"] = np.where(known, borough[at], unknown).astype(np.int8)
        flags[f"{prefix}_airport"] = np.where(known, airport[at], 0).astype(np.int8)
    flags["same_borough"] = (flags["pu_borough"] == flags["do_borough"]).astype(np.int8)
    return {name: flags[name] for name in FLAG_COLUMNS}
