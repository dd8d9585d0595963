"""An S3 API for tests: moto's server mode (`moto_server`), a real HTTP server on 127.0.0.1 speaking S3.

It is a mock, not a storage server: what it checks is what moto implements. With INITIAL_NO_AUTH_ACTION_COUNT
set it checks SigV4 signatures against the IAM access keys it knows, so after the first few setup calls
(an IAM user with an S3 policy and its access key) a wrong secret key is refused as real S3 would. No Debian
or PyPI package ships an S3-compatible server that is not a mock (no MinIO in Debian 12).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import httpx

from tests import processes
from tests.processes import Server
from tests.servers import free_port

REGION = "eu-west-1"
POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'
SETUP_CALLS = 3  # CreateUser, PutUserPolicy, CreateAccessKey: unsigned; everything after is checked


@dataclass
class S3(Server):
    access_key: str = ""
    secret_key: str = ""
    client: Any = None

    def put(self, bucket: str, key: str, body: str | bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)

    def create(self, bucket: str) -> None:
        self.client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})


@contextlib.contextmanager
def s3_server(tmp: Path, *, tls: dict[str, str] | None = None) -> Iterator[S3]:
    """moto_server on a free loopback port; `tls`: certificate, key and the CA that signed them (HTTPS)."""
    venv_bin = Path(sys.executable).parent / "moto_server"
    found = str(venv_bin) if venv_bin.is_file() else shutil.which("moto_server")
    if found is None:
        processes.missing("moto_server is not installed (pip install 'moto[server]', the dev extra)")
    assert found is not None
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    env = {
        **os.environ,
        "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS),
        "MOTO_ALLOW_NONEXISTENT_REGION": "false",
    }
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=tls["ca"]) if tls else True

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/moto-api/", timeout=1, verify=verify).status_code == 200
        return False

    argv = [found, "-H", "127.0.0.1", "-p", str(port)]
    if tls:
        argv += ["-s", "-c", tls["certificate"], "-k", tls["key"]]
    with processes.started(argv, tmp / "moto.log", ready, name="moto_server", env=env) as process:
        session = botocore.session.get_session()
        setup = {
            "endpoint_url": url,
            "region_name": REGION,
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "x",
            "verify": tls["ca"] if tls else None,
        }
        iam = session.create_client("iam", **setup)
        iam.create_user(UserName="flux")
        iam.put_user_policy(UserName="flux", PolicyName="s3", PolicyDocument=POLICY)
        key = iam.create_access_key(UserName="flux")["AccessKey"]
        s3 = session.create_client(
            "s3",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            verify=tls["ca"] if tls else None,
        )
        yield S3(url, process, tmp / "moto.log", key["AccessKeyId"], key["SecretAccessKey"], s3)
