"""`trip_source`: where monthly trip files come from (generated, TLC over HTTP, or a folder)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from ml_assets import settings
from ml_assets.core.credentials import mask
from ml_assets.core.sources import TripFileSource
from ml_assets.core.storage import location


class TripSourceResource(ConfigurableResource):
    """The source of monthly trip files: generated (`synthetic`), TLC over HTTP (`tlc`), or a folder."""

    kind: str = Field(default="synthetic", description="synthetic | tlc | directory")
    directory: str | None = Field(default=None, description="the folder of TLC-named files (kind directory)")
    taxi: str = Field(default="green", description="TLC taxi type: green or yellow")
    tlc_url: str = Field(default=settings.TLC_URL.default, description="TLC base URL")
    cache_dir: str = Field(
        description="folder or fsspec URL (s3://bucket/prefix) where downloaded and generated month files are kept"
    )
    synthetic_seed: int = 0
    synthetic_rows: int = 60_000
    synthetic_published_through: str | None = Field(
        default=None, description="synthetic months after this YYYY-MM count as not yet published"
    )

    def source(self) -> TripFileSource:
        """The Dagster-free source object this resource describes."""
        if self.kind == "synthetic":
            from ml_assets.core.sources.synthetic import SyntheticSource

            return SyntheticSource(
                cache_dir=location(self.cache_dir) / "synthetic",
                seed=self.synthetic_seed,
                rows=self.synthetic_rows,
                published_through=self.synthetic_published_through,
                taxi=self.taxi,
            )
        if self.kind == "tlc":
            from ml_assets.core.sources.tlc import TlcSource

            return TlcSource(cache_dir=location(self.cache_dir) / "tlc", base_url=self.tlc_url, taxi=self.taxi)
        from ml_assets.core.sources.directory import DirectorySource

        return DirectorySource(path=self.directory, taxi=self.taxi)

    @property
    def label(self) -> str:
        """What `source` metadata says: synthetic, the TLC URL, or the directory."""
        return {"synthetic": "synthetic", "tlc": f"tlc {mask(self.tlc_url)}"}.get(
            self.kind, f"directory {self.directory}"
        )
