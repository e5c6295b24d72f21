"""The embedded servers of a data folder: one Redis per folder, shared by the `tzt` commands run beside the server
(issue 14, finding 7: every command started a second Redis on the server's own files)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from app_backend.composition.embedded import DataFolderBusy, EmbeddedServices
from tests.conftest import Backing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_starts(data_dir: Path) -> int:
    """How many Redis servers have started on this folder's files (each logs its start there)."""
    log = data_dir / "redis" / "redis.log"
    return log.read_text().count("Ready to accept connections") if log.exists() else 0


def test_a_command_beside_the_server_uses_its_redis(backing: Backing, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TZT_PAYMENT_CONFIG")},
        **{k: v for k, v in backing.env().items() if k != "REDIS_URL"},  # the data folder's Redis, embedded
        "TZT_DATA_DIR": str(data_dir),
        "TZT_ENV": "dev",
        "TZT_PORT": str(port),
        "TZT_WORKERS": "1",
        "TZT_INTERNAL_PORT": "0",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "app_backend.composition.cli", "serve", "--no-seed", "--no-sandboxes"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tzt serve did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        assert _redis_starts(data_dir) == 1
        done = subprocess.run(
            [sys.executable, "-m", "app_backend.composition.cli", "keys", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert _redis_starts(data_dir) == 1, "the command started a second Redis on the server's files"
        # and the server's Redis is still there for the server
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        migrated = subprocess.run(
            [sys.executable, "-m", "app_backend.composition.cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0 and _redis_starts(data_dir) == 1, migrated.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_one_redis_per_data_folder_and_only_its_starter_stops_it(tmp_path: Path) -> None:
    first = EmbeddedServices(tmp_path)
    first.start(want_postgres=False, want_redis=True, persistent_redis=False)
    try:
        second = EmbeddedServices(tmp_path)
        second.start(want_postgres=False, want_redis=True, persistent_redis=False)
        assert second.redis_url == first.redis_url and _redis_starts(tmp_path) == 1
        second.stop()
        assert redis.Redis.from_url(first.redis_url).ping(), "a borrower never stops the Redis it borrowed"
        # A server beside another server's Redis would share its replay sets and queues: refused, by name.
        server = EmbeddedServices(tmp_path)
        first_owner = (tmp_path / "redis" / "owner.json").read_text()
        (tmp_path / "redis" / "owner.json").write_text(
            first_owner.replace('"serving": false', '"serving": true')
        )
        with pytest.raises(DataFolderBusy, match="already runs on"):
            server.start(want_postgres=False, want_redis=True, serving=True)
    finally:
        first.stop()
    assert not (tmp_path / "redis" / "owner.json").exists()
    again = EmbeddedServices(tmp_path)
    again.start(want_postgres=False, want_redis=True, persistent_redis=False)
    again.stop()
    assert _redis_starts(tmp_path) == 2
