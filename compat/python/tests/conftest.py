"""Starts a fresh tidewire on free ports for each test module."""
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import pytest
import redis

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("TIDEWIRE_BIN", str(ROOT / "target" / "debug" / "tidewire"))
    data_dir = tempfile.mkdtemp(prefix="tidewire-py-")
    proc = subprocess.Popen(
        [binary, "--port", "0", "--http-port", "0", "--print-ports", "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    match = re.search(r"LISTENING resp=(\d+) http=(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"tidewire did not start: {line!r}")
    yield {"resp": int(match.group(1)), "http": int(match.group(2))}
    proc.terminate()
    proc.wait(timeout=20)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def r(server):
    client = redis.Redis(host="127.0.0.1", port=server["resp"], decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def r3(server):
    """A RESP3 connection."""
    client = redis.Redis(host="127.0.0.1", port=server["resp"], decode_responses=True, protocol=3)
    yield client
    client.close()
