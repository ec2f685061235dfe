"""An S3-compatible object store on 127.0.0.1 for tests: moto's server mode, in a process of its own.

It speaks the S3 protocol over HTTP to the real clients: s3fs (through universal-pathlib) in the
code, boto3 in the MLflow server. Both find it through `AWS_ENDPOINT_URL`, which botocore reads
for every client it makes, so nothing in the code knows it is talking to a test server.

    with moto_s3(log) as s3:
        bucket = s3.new_bucket()
        env = s3.env()      # AWS_ENDPOINT_URL and fake credentials
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ml_assets_tests.support import free_port, stop_process_group

REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

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

    def multipart_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads begun and never completed (invisible as objects)."""
        uploads = self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return sorted(upload["Key"] for upload in uploads)


@contextlib.contextmanager
def moto_s3(log: Path) -> Iterator[S3Server]:
    """`moto_server` on a free loopback port in a session of its own, stopped by its process id."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = S3Server(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{server.endpoint_url}/moto-api/", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield server
    finally:
        stop_process_group(process)
