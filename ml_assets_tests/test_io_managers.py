"""Asset values read back as they were written."""

import pandas as pd
from dagster import AssetKey

from ml_assets.io_managers import ParquetIOManager


def test_numeric_categories_come_back_with_their_values(tmp_path):
    """Fewer than 128 zones (a small month) with zone ids above 127: pandas records int8 codes."""
    frame = pd.DataFrame({"PULocationID": pd.Series([7, 130, 265, 7], dtype="int32").astype("category")})
    manager = ParquetIOManager(root=str(tmp_path))
    path = manager.path(AssetKey("cleaned_trips"), "2023-01")
    manager.write(frame, path)
    read = manager.read(path, pd.DataFrame)
    assert read["PULocationID"].dtype == "category"
    pd.testing.assert_frame_equal(read, frame)
