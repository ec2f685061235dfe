"""Object stores on 127.0.0.1 for tests, each in a process of its own, spoken to by the real clients.

- S3: moto's server mode. s3fs (through universal-pathlib) and the MLflow server's boto3 find it
  through `AWS_ENDPOINT_URL`, which botocore reads for every client it makes.
- Google Cloud Storage: gcp-storage-emulator, which serves GCS's JSON API. gcsfs finds it through
  `STORAGE_EMULATOR_HOST` (the variable Google's own clients read), anonymously through fsspec's
  `FSSPEC_GCS_TOKEN=anon`. The emulator has no gRPC storage-control API, so gcsfs's probe of a
  bucket's type is turned off (`GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`): against real GCS it
  tells hierarchical and zonal buckets apart, which ml_assets does not use.

Nothing in the code knows it is talking to a test server:

    with start_store("s3", log) as store:
        bucket = store.new_bucket()
        env = store.env()      # the variables a client process needs
        store.keys(bucket)     # what is stored, listed by the store's own API
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ml_assets_tests.support import BIN, free_port, stop_process_group, wait_until_answers

REGION = "us-east-1"
SCHEMES = ("s3", "gs")


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    scheme = "s3"
    probe = "/moto-api/"  # answers once the server is up

    @staticmethod
    def command(port: int) -> list[str]:
        return [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]

    def env(self) -> dict[str, str]:
        """What a client process needs: the endpoint and credentials (fake ones: moto accepts any)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self):
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        )

    def new_bucket(self) -> str:
        name = f"ml-assets-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()


@dataclass(frozen=True)
class GcsServer:
    endpoint_url: str
    scheme = "gs"
    probe = "/storage/v1/b?project=test"

    @staticmethod
    def command(port: int) -> list[str]:
        return [str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]

    def env(self) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint_url,
            "FSSPEC_GCS_TOKEN": "anon",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }

    def _call(self, path: str, body: dict | None = None):
        request = urllib.request.Request(
            f"{self.endpoint_url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def new_bucket(self) -> str:
        name = f"ml-assets-{secrets.token_hex(4)}"
        self._call("/storage/v1/b?project=test", {"name": name})
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        query = urllib.parse.urlencode({"prefix": prefix, "maxResults": 1000})
        listing = json.loads(self._call(f"/storage/v1/b/{bucket}/o?{query}"))
        assert "nextPageToken" not in listing, "more objects than one page holds"
        return sorted(item["name"] for item in listing.get("items", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self._call(f"/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}?alt=media")


@contextlib.contextmanager
def start_store(scheme: str, log: Path, env: dict[str, str] | None = None) -> Iterator[S3Server | GcsServer]:
    """The test server of `scheme` on a free loopback port, in a session of its own, stopped by its id; `env`
    added to its environment."""
    server, port = {"s3": S3Server, "gs": GcsServer}[scheme], free_port()
    command = server.command(port)
    with log.open("w") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )
    try:
        store = server(f"http://127.0.0.1:{port}")
        wait_until_answers(f"{store.endpoint_url}{server.probe}", lambda: process.poll() is None, log, 60)
        yield store
    finally:
        stop_process_group(process)


@dataclass(frozen=True)
class Bucket:
    """A bucket of a test store: its URL, and its objects as the store's own API lists them."""

    server: S3Server | GcsServer
    name: str

    @property
    def url(self) -> str:
        return f"{self.server.scheme}://{self.name}"

    def keys(self, prefix: str = "") -> list[str]:
        return self.server.keys(self.name, prefix)

    def read(self, key: str) -> bytes:
        return self.server.read(self.name, key)
