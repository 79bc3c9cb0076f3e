"""Shared fixtures: real local Ray, a real S3 server on loopback, the real data in ../shared/data, and a tiny
hybrid base checkpoint."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest
from datapaths import SHARED_DATA, shared_data  # noqa: F401  (re-exported for tests)

os.environ.setdefault("NANOFORGE_PROGRESS", "0")  # no progress bars in test logs
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may load from the Hub in tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The S3 server's address and fake credentials go into the environment before any Ray starts, so that every Ray
# worker (which inherits the environment of the process that started Ray) reaches the same server. s3fs/botocore
# and pyarrow's S3 filesystem both read AWS_ENDPOINT_URL. Nothing here can reach real AWS.
S3_PORT = _free_port()
S3_SECRET = "nanoforge-test-secret-" + uuid.uuid4().hex[:8]  # tests check it never reaches an artifact
os.environ.update(
    AWS_ENDPOINT_URL=f"http://127.0.0.1:{S3_PORT}",
    AWS_ACCESS_KEY_ID="nanoforge-test-key",
    AWS_SECRET_ACCESS_KEY=S3_SECRET,
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)


@pytest.fixture(scope="session")
def s3_server() -> str:
    """A real S3 HTTP server (moto's server mode) on loopback for the session; yields its bucket as s3://..."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -e '.[dev]')")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
    import logging

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per S3 request otherwise
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    boto3.client("s3").create_bucket(Bucket="nanoforge-test")
    yield "s3://nanoforge-test"
    server.stop()


@pytest.fixture
def s3_prefix(s3_server, request) -> str:
    """A fresh prefix on the S3 server for one test."""
    return f"{s3_server}/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def ray_local():
    """A real embedded Ray for the whole session (2 CPUs, like CI)."""
    import ray

    from pipelines.core.runtime import init_ray

    started = init_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random NemotronH checkpoint + tokenizer + chat template, built once per test session."""
    from sft.init_base import build_base

    return build_base(tmp_path_factory.mktemp("base") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module of tiny-model tests: a second thread only adds contention on 2 shared cores.

    Use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
