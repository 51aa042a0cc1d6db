"""A throw-away S3 endpoint for tests: moto's standalone S3 server, in a thread of the test process.

moto answers the S3 protocol on 127.0.0.1 and a port chosen by the system;
any credentials are accepted, so the tests set dummy ones in the environment,
where both the test's own boto3 client and the processes it starts find them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@attrs.frozen
class S3Server:
    endpoint: str
    client: Any  # a boto3 S3 client on the endpoint, for the test's own checks

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body)

    def get(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1, port 0, with buckets ``media-in`` and ``media-out``; stopped at teardown."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint)
        for bucket in ("media-in", "media-out"):
            client.create_bucket(Bucket=bucket)
        yield S3Server(endpoint, client)
    finally:
        server.stop()
