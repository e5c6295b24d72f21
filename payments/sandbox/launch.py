"""Start a channel sandbox as its own process (`python -m payments.sandbox CHANNEL`) and wait until it answers.

The one way everything starts a sandbox: `tzt serve` in dev, the payment tests, the load tests' backend.

    with running_sandbox("wechat", state_dir) as sandbox:
        httpx.post(f"{sandbox.base_url}/_sandbox/trades/{out_trade_no}/pay", json={"deliver": False})

or, for a caller that owns the process from then on (and stops it with `stop_sandbox`):

    base_url, process = start_sandbox("alipay", state_dir, preexec_fn=die_with_parent)

The sandbox listens on a free port of 127.0.0.1 and keeps its keys (and, for WeChat, `wechat.json`, the merchant it
plays) in `state_dir`; its output goes to `state_dir/sandbox.log` unless `log` says otherwise. The base URL has no
trailing slash. If the sandbox does not answer GET /_sandbox/health in time it is killed and `SandboxDidNotStart`
raised with the end of its log; a sandbox that exits at once (its port taken meanwhile) is tried on a fresh port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
_PROJECT = Path(__file__).resolve().parents[2]  # where `python -m payments.sandbox` imports this very code


class SandboxDidNotStart(RuntimeError):
    """The sandbox exited or did not answer its health check in time."""


@dataclass(frozen=True)
class LaunchedSandbox:
    channel: str
    base_url: str
    process: subprocess.Popen[bytes]
    state_dir: Path
    log: Path


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_sandbox(
    channel: str,
    state_dir: Path,
    *,
    log: Path | None = None,
    timeout_s: float = 30.0,
    attempts: int = 3,
    preexec_fn: Callable[[], None] | None = None,
    env: Mapping[str, str] | None = None,
    module: str = "payments.sandbox",
) -> tuple[str, subprocess.Popen[bytes]]:
    """Starts the `channel` sandbox and waits for its health check; returns its base URL and its process.

    `preexec_fn` runs in the child before the sandbox (for instance one that makes it die with its parent);
    `env` replaces the inherited environment; `module` is the sandbox's package (the identity vendors' sandbox,
    app_backend.identity.aliyun_sandbox, takes the same command line)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = log or state_dir / "sandbox.log"
    for _ in range(max(1, attempts)):
        port = free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 - our own module
                [
                    sys.executable,
                    "-m",
                    module,
                    channel,
                    "--port",
                    str(port),
                    "--state-dir",
                    str(state_dir),
                ],
                cwd=_PROJECT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                preexec_fn=preexec_fn,
            )
        base_url = f"http://{HOST}:{port}"
        try:
            if _wait_healthy(base_url, process, timeout_s):
                return base_url, process
        except BaseException:
            stop_sandbox(process, timeout_s=0)
            raise
        stop_sandbox(process, timeout_s=0)
    tail = log.read_text(errors="replace")[-3000:]
    raise SandboxDidNotStart(f"the {channel} sandbox did not start; see {log}:\n{tail}")


def _wait_healthy(base_url: str, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = httpx.get(f"{base_url}/_sandbox/health", timeout=1)
            if answer.status_code == 200 and answer.json().get("ok"):
                return True
        time.sleep(0.05)
    return False


def stop_sandbox(process: subprocess.Popen[bytes], *, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_sandbox(
    channel: str, state_dir: Path, *, log: Path | None = None, module: str = "payments.sandbox"
) -> Iterator[LaunchedSandbox]:
    """The sandbox for the duration of the block, stopped afterwards."""
    log = log or state_dir / "sandbox.log"
    base_url, process = start_sandbox(channel, state_dir, log=log, module=module)
    try:
        yield LaunchedSandbox(channel, base_url, process, state_dir, log)
    finally:
        stop_sandbox(process)
