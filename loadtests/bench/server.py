"""The backend under test: `tzt serve --no-worker` with ONE Granian worker and a temporary data folder (embedded
PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set), limits lifted, stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loadtests.processes import Server, free_port, stop_server, wait_ready

WORKERS = 1


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    external = bool(os.environ.get("DATABASE_URL"))
    given = os.environ.get("TZT_DATA_DIR")
    # With an external database, its data key must match: keep the operator's data folder if one is given.
    data_dir = Path(given) if external and given else Path(tempfile.mkdtemp(prefix="tzt-bench-"))
    owned = not (external and given)
    port = free_port()
    env = {
        **os.environ,
        "TZT_DATA_DIR": str(data_dir),
        "TZT_ENV": "dev",
        "TZT_WORKERS": str(WORKERS),
        "TZT_OTP_DAILY_PER_IP": "100000",
        # The bench measures speed, not limits: a resident's and an organisation's counters are still incremented
        # on every request, but 200 residents showing codes flat out for a minute would pass the default 120
        # requests a minute, and one hospital verifying flat out passes its default 3,000 a second on a quiet
        # machine (its 429s, not counted as completed, then lowered the health row).
        "TZT_RATE_RESIDENT_PER_MINUTE": "1000000",
        "TZT_RATE_ORGANISATION_PER_SECOND": "1000000",
        "TZT_LOG_LEVEL": "WARNING",
    }
    env.pop("TZT_PORT", None)
    log = data_dir / "bench-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "app_backend.composition.cli",
                "serve",
                "--port",
                str(port),
                "--no-worker",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", "127.0.0.1", port, data_dir, proc, log)
    try:
        wait_ready(server.base, proc, log, 180.0, "the server")
        server.find_processes()
        yield server
    finally:
        stop_server(proc)
        if owned:
            shutil.rmtree(data_dir, ignore_errors=True)
