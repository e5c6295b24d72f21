"""`tzt`: serve, migrate, seed, worker, and small operator tools (signed calls, staff roles)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app_backend.composition.processes import die_with_parent, granian_command, listeners
from app_backend.kernel.settings import Settings, load_settings


@contextlib.contextmanager
def backing_services(
    settings: Settings, *, persistent_redis: bool = True, serving: bool = False, needs_redis: bool = True
) -> Iterator[Settings]:
    """Uses DATABASE_URL / REDIS_URL when set; otherwise the embedded servers of the data folder (PostgreSQL with
    an owner role for migrations and an application role for the server): those the running server started, or
    started here when none runs. `serving`: for `tzt serve` itself; `needs_redis`: False for a command that uses
    only the database."""
    from app_backend.composition.embedded import EmbeddedServices

    embedded = EmbeddedServices(settings.data_dir)
    try:
        embedded.start(
            want_postgres=not settings.database_url,
            want_redis=needs_redis and not settings.redis_url,
            persistent_redis=persistent_redis,
            serving=serving,
        )
        import msgspec

        yield msgspec.structs.replace(
            settings,
            database_url=settings.database_url or embedded.database_url,
            migration_database_url=settings.migration_database_url
            or ("" if settings.database_url else embedded.migration_database_url),
            redis_url=settings.redis_url or embedded.redis_url,
        )
    finally:
        embedded.stop()


class NoOwnerURL(RuntimeError):
    """Outside dev, migrations need the owner's URL; the server's own role may not run them."""


async def _migrate(settings: Settings, *, required: bool = False) -> list[str]:
    """As the owner (MIGRATION_DATABASE_URL), then the application role (DATABASE_URL's user) gets its grants.
    Without an owner URL, dev migrates as DATABASE_URL (one role, as before) unless that is an application role
    of a database another role migrated; production skips migrating, which is `tzt migrate`'s job. `required`:
    refuse instead of skipping."""
    from app_backend.composition.migrator import apply_migrations

    if settings.migration_database_url:
        return await apply_migrations(settings.migration_database_url, app_url=settings.database_url)
    if settings.is_dev:
        from app_backend.composition.roles import migrated_by_another_role

        if not await migrated_by_another_role(settings.database_url):
            return await apply_migrations(settings.database_url)
        if required:
            raise NoOwnerURL(
                "DATABASE_URL is an application role; migrations need MIGRATION_DATABASE_URL (the owner's URL)"
            )
        return []
    if required:
        raise NoOwnerURL(
            "tzt migrate needs MIGRATION_DATABASE_URL (the owner role's URL) outside dev; DATABASE_URL names the "
            "application role it creates and grants (docs/operations.md, 'Database roles')"
        )
    print("migrations skipped: no MIGRATION_DATABASE_URL (run `tzt migrate` with it)", file=sys.stderr)
    return []


async def _seed(settings: Settings) -> dict[str, Any]:
    from app_backend.composition.seed import seed_demo
    from app_backend.composition.wiring import Services

    path = settings.data_dir / "demo-credentials.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    services = await Services.create(settings)
    try:
        stored = await seed_demo(services, known)
    finally:
        await services.close()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(stored, fh, ensure_ascii=False, indent=1)
    return stored


def _print_banner(settings: Settings, creds: dict[str, Any]) -> None:
    from app_backend.composition.roles import user_of

    base = f"http://{settings.host}:{settings.port}"
    # Outside dev, docs and metrics are only on the internal listener (app_backend/composition/surface.py).
    ops = base if settings.is_dev else f"http://{settings.internal_host}:{settings.internal_port}"
    docs = (
        [
            f"  API docs (Swagger):  {ops}/schema/swagger",
            f"  API docs (ReDoc):    {ops}/schema/redoc",
            f"  OpenAPI JSON:        {ops}/schema/openapi.json",
            f"  Metrics:             {ops}/metrics",
        ]
        if settings.is_dev or settings.internal_port
        else ["  API docs, metrics:   not served (TZT_INTERNAL_PORT=0)"]
    )
    lines = [
        "",
        "Taizhou Tong is running.",
        *docs,
        f"  Health:              {base}/healthz   Readiness: {base}/readyz",
        f"  PostgreSQL:          {'embedded' if 'host=/' in settings.database_url else 'external'}"
        f" (serving as {user_of(settings.database_url)[0] or 'the default user'})",
        f"  Redis:               {settings.redis_url}",
        "",
        *(_demo_lines(base, settings) if settings.is_dev else []),
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _demo_lines(base: str, settings: Settings) -> list[str]:
    """How to try the demo data: dev only (outside dev there is no outbox route and no demo data)."""
    return [
        'Demo: POST /api/v1/auth/otp {"phone": "13800000001"}, read the code at '
        f"{base}/api/v1/dev/outbox?phone=13800000001,",
        '      then POST /api/v1/auth/login {"phone": ..., "otp": ...}. Staff (ops_admin): phone 13900000000.',
        f"      Machine credentials for signed requests: {settings.data_dir / 'demo-credentials.json'}",
        "      (try: .venv/bin/tzt call GET /api/v1/machine/whoami --org 泰州地铁运营有限公司)",
        f"      One login (OIDC): {base}/.well-known/openid-configuration; the demo department app's client id",
        '      and secret are under "one_login" in that file (docs/api.md, "One login (OIDC)").',
    ]


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    host, port = args.host or settings.host, args.port or settings.port
    workers = args.workers or settings.workers
    import msgspec

    # Callbacks (payment notifications) must reach the port actually served, not the default one.
    base_url = os.environ.get("TZT_PUBLIC_BASE_URL") or f"http://127.0.0.1:{port}"
    settings = msgspec.structs.replace(
        settings, host=host, port=port, workers=workers, public_base_url=base_url
    )
    with backing_services(settings, serving=True) as live:
        asyncio.run(_migrate(live))
        creds = asyncio.run(_seed(live)) if live.is_dev and not args.no_seed else {}
        prom_dir = live.data_dir / "prometheus"
        shutil.rmtree(prom_dir, ignore_errors=True)
        prom_dir.mkdir(parents=True)
        env = {
            **os.environ,
            "DATABASE_URL": live.database_url,
            "REDIS_URL": live.redis_url,
            "TZT_DATA_DIR": str(live.data_dir),
            "TZT_ENV": live.env,
            "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
            "TZT_HOST": host,
            "TZT_PORT": str(port),
            "TZT_PUBLIC_BASE_URL": live.public_base_url,
        }
        # Migrated: no process started from here on (server, worker, sandboxes) gets the owner's URL.
        os.environ.pop("MIGRATION_DATABASE_URL", None)
        env.pop("MIGRATION_DATABASE_URL", None)
        children: list[subprocess.Popen[bytes]] = []
        try:
            server = _start_children(args, live, env, children, host, port, workers)
            _print_banner(live, creds)
            if "TZT_PAYMENT_CONFIG" in env:
                channels = json.loads(Path(env["TZT_PAYMENT_CONFIG"]).read_text())
                for name, section in channels.items():
                    base = section.get("api_base_url") or section.get("gateway_url", "")
                    print(f"  Payment sandbox ({name}): {base}  (test controls under /_sandbox/)", flush=True)
            if "TZT_MINI_PROGRAM_CONFIG" in env:
                apps = json.loads(Path(env["TZT_MINI_PROGRAM_CONFIG"]).read_text())
                for name, entries in apps.items():
                    bases = {e.get("api_base_url") or e.get("gateway_url", "") for e in entries}
                    ids = ", ".join(e["app_id"] for e in entries)
                    for base in sorted(bases):
                        print(
                            f"  Mini-program sandbox ({name}): {base}  (apps {ids}; test controls under /_sandbox/)",
                            flush=True,
                        )
            _supervise(server, children)
        except KeyboardInterrupt:
            pass
        finally:
            # Whatever happened above, nothing we started outlives us.
            _stop_children(children)
        print("stopped.", flush=True)
    return 0


def _start_children(
    args: argparse.Namespace,
    live: Settings,
    env: dict[str, str],
    children: list[subprocess.Popen[bytes]],
    host: str,
    port: int,
    workers: int,
) -> subprocess.Popen[bytes]:
    if live.is_dev and not os.environ.get("TZT_PAYMENT_CONFIG") and not args.no_sandboxes:
        from app_backend.composition.sandboxes import start_sandboxes

        payment_config = start_sandboxes(live.data_dir, children)
        env["TZT_PAYMENT_CONFIG"] = str(payment_config)
    if live.is_dev and not os.environ.get("TZT_MINI_PROGRAM_CONFIG") and not args.no_sandboxes:
        from app_backend.composition.sandboxes import start_mini_program_sandboxes

        env["TZT_MINI_PROGRAM_CONFIG"] = str(start_mini_program_sandboxes(live.data_dir, children))
    if live.is_dev and args.identity_sandbox:
        from app_backend.composition.sandboxes import start_identity_sandbox

        env.update(start_identity_sandbox(live.data_dir, children))
        sandbox = f"http://{env['TZT_ALIYUN_ENDPOINT']}"
        print(
            f"  Identity sandbox (aliyun): {sandbox}  (texts: {sandbox}/_sandbox/messages?phone=…)",
            flush=True,
        )
    if not args.no_worker:
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "app_backend.composition.cli", "worker"],
                env=env,
                preexec_fn=die_with_parent,
            )
        )
    server: subprocess.Popen[bytes] | None = None
    for listener in listeners(live, host, port, workers):
        started = subprocess.Popen(  # noqa: S603 - our own interpreter and Granian
            granian_command(listener, live), env={**env, **listener.env}, preexec_fn=die_with_parent
        )
        children.append(started)
        server = server or started
    if server is None:
        raise RuntimeError("no listener to start")
    return server


def _supervise(server: subprocess.Popen[bytes], children: list[subprocess.Popen[bytes]]) -> None:
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(c.poll() is None for c in children):
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(0.5)


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    for child in children:
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def cmd_migrate(_: argparse.Namespace) -> int:
    with backing_services(load_settings(), needs_redis=False) as live:
        try:
            applied = asyncio.run(_migrate(live, required=True))
        except NoOwnerURL as exc:
            print(exc, file=sys.stderr)
            return 2
    print("\n".join(applied) if applied else "up to date")
    return 0


def cmd_seed(_: argparse.Namespace) -> int:
    with backing_services(load_settings()) as live:
        asyncio.run(_migrate(live))
        creds = asyncio.run(_seed(live))
    print(f"seeded; {len(creds)} demo credentials in {live.data_dir / 'demo-credentials.json'}")
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    from app_backend.composition.logging import configure_logging
    from app_backend.composition.worker import build_worker

    settings = load_settings()
    if not settings.redis_url or not settings.database_url:
        print("worker needs DATABASE_URL and REDIS_URL (tzt serve sets them)", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    worker = build_worker(settings)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.stop()))
        await worker.start()

    asyncio.run(run())
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    """A signed machine request, the way a department's or gate's client sends one."""
    import httpx

    from app_backend.organisations.signing import sign_request

    key_id, secret = args.key_id, args.secret or os.environ.get("TZT_CLIENT_SECRET", "")
    if args.org:
        creds = json.loads((load_settings().data_dir / "demo-credentials.json").read_text())
        key_id, secret = creds[args.org]["key_id"], creds[args.org]["secret"]
    if not key_id or not secret:
        print(
            "give --org NAME (demo credentials) or --key-id and --secret / TZT_CLIENT_SECRET", file=sys.stderr
        )
        return 2
    body = args.data.encode() if args.data else b""
    url = httpx.URL(args.base.rstrip("/") + args.path)
    path = url.raw_path.decode()
    headers = sign_request(key_id, secret, args.method, path, body)
    if body:
        headers["Content-Type"] = "application/json"
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            print(f"--header {header!r}: give NAME: VALUE", file=sys.stderr)
            return 2
        headers[name.strip()] = value.strip()
    response = httpx.request(args.method, url, content=body, headers=headers, timeout=30)
    print(response.status_code, file=sys.stderr)
    print(response.text)
    return 0 if response.is_success else 1


def cmd_staff(args: argparse.Namespace) -> int:
    async def grant(live: Settings) -> str:
        from app_backend.composition.wiring import Services
        from app_backend.identity.repository import ResidentRepository
        from app_backend.identity.validators import normalise_phone
        from app_backend.kernel.actors import Actor

        services = await Services.create(live)
        try:
            phone = normalise_phone(args.phone)
            repo = ResidentRepository()
            async with services.pool.acquire() as conn, conn.transaction():
                row = await repo.find_by_phone_hash(
                    conn, services.cipher.lookup_hash("resident.phone", phone)
                )
                if row is None:
                    return "no resident with this phone; they must log in once first"
                await repo.grant_role(conn, row.id, args.role, "cli")
                await services.audit.record(
                    conn,
                    Actor("cli", os.environ.get("USER", "cli")),
                    "admin.staff_grant",
                    target_type="resident",
                    target_id=str(row.id),
                    detail={"role": args.role},
                )
            return f"granted {args.role} to resident {row.id}"
        finally:
            await services.close()

    with backing_services(load_settings()) as live:
        print(asyncio.run(grant(live)))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """`rotate` stages the next code-signing key: published now, signing after the publish lead (25 h), once every
    verifier that refreshes daily has it; the old key stays published until what it signed has expired. The cron
    job does this by itself every TZT_KEY_ROTATION_DAYS. `rotate --now` is for a key that may have leaked: the new
    key signs at once and offline verifiers refuse its codes until they refresh; `--withdraw` also unpublishes the
    old key at once. With `--scene-keys` the same is done to the scene-key epochs, which follow the same schedule
    (weekly, by their own cron job); after `--now` verifiers that have not refreshed their scene keys answer
    `no-scene-key` for new codes until they do (docs/operations.md, "Code-signing keys" and "Scene keys"). With
    `--oidc` it is done to the one-login provider's ID-token keys, on the same schedule (docs/operations.md, "One
    login")."""
    scene = args.scene_keys
    if scene and args.oidc:
        print("give --scene-keys or --oidc, not both", file=sys.stderr)
        return 2

    def _state(state: str) -> str:
        return "in-use" if scene and state == "signing" else state

    # What a key of this family is called, and what "signing" means for it.
    noun, uses = ("scene-key epoch", "in codes") if scene else ("signing key", "signs")
    refused = "no-scene-key" if scene else "unknown-key"
    document = "scene keys" if scene else "the JWKS"
    if args.oidc:
        noun, document = "ID-token key", "the one-login JWKS (/oidc/jwks)"

    async def run(live: Settings) -> list[str]:
        from app_backend.composition.wiring import Services
        from app_backend.kernel.actors import Actor
        from code_service.keys.service import ScheduledKeys

        services = await Services.create(live)
        try:
            from app_backend.oidc.service import OidcService

            keys: ScheduledKeys[Any] = services.codes.scene_keys if scene else services.codes.keys
            if args.oidc:
                keys = services.platform.get(OidcService).keys
            async with services.pool.acquire() as conn, conn.transaction():
                if args.action == "list":
                    at = keys.clock()
                    return [
                        f"{r.kid}  {_state(keys.schedule.state(r, at))}  published {_when(r.created_at)} to "
                        f"{_when(r.retire_at)}  {uses} {_when(r.signs_from)} to {_when(r.signs_until)}"
                        for r in await keys.live(conn)
                    ]
                change = await (keys.rotate_now(conn, args.withdraw) if args.now else keys.stage(conn))
                if change.created:
                    action = "scene_key_rotate" if scene else "oidc_key_rotate" if args.oidc else "key_rotate"
                    await services.audit.record(
                        conn,
                        Actor("cli", os.environ.get("USER", "cli")),
                        f"admin.{action}_now" if args.now else f"admin.{action}",
                        target_type="scene_epoch"
                        if scene
                        else "oidc_signing_key"
                        if args.oidc
                        else "signing_key",
                        target_id=change.key.kid,
                        detail={"withdraw": args.withdraw} if args.now else {},
                    )
                key, old = change.key, change.previous
                if args.now:
                    told = [f"new {noun} {key.kid} {'used in codes' if scene else 'signs'} now"]
                    if old is not None:
                        told.append(
                            f"{old.kid} withdrawn from {document}"
                            if args.withdraw
                            else f"{old.kid} stays published until {_when(old.retire_at)}"
                        )
                    return [
                        *told,
                        f"departments that cache {document} must fetch it again for new ID tokens"
                        if args.oidc
                        else f"offline verifiers that have not refreshed {document} answer {refused} for new codes "
                        "until they refresh",
                    ]
                staged = "staged" if change.created else "already staged:"
                told = [f"{staged} {noun} {key.kid}, published now, {uses} from {_when(key.signs_from)}"]
                if old is not None:
                    told.append(
                        f"{old.kid} {uses} until then and stays published until {_when(old.retire_at)}"
                    )
                return told
        finally:
            await services.close()

    if args.withdraw and not args.now:
        print("--withdraw needs --now: it is for a key that may have leaked", file=sys.stderr)
        return 2
    with backing_services(load_settings()) as live:
        asyncio.run(_migrate(live))
        print("\n".join(asyncio.run(run(live))) or "no keys yet")
    return 0


def _when(at: Any) -> str:
    return "-" if at is None else f"{at:%Y-%m-%d %H:%M} UTC"


def cmd_ledger(_: argparse.Namespace) -> int:
    """Checks the ledger's invariants: every entry balances, every stored balance equals the sum of its
    postings, no payable is below zero, every settlement agrees with its entries and skipped none, money owed back
    to riders left, and per channel and business day clearing equals what the final bill says the channel holds
    for us. Exits 1 when one fails."""

    async def run(live: Settings) -> Any:
        from app_backend.composition.wiring import Services

        services = await Services.create(live)
        try:
            async with services.pool.acquire() as conn:
                return await services.payments.ledger.check(conn, against_bills=True)
        finally:
            await services.close()

    with backing_services(load_settings()) as live:
        asyncio.run(_migrate(live))
        result = asyncio.run(run(live))
    for label, problems in (
        ("unbalanced entries", result.unbalanced_entries),
        ("balances that drifted from their postings", result.drifted_balances),
        ("balances on the wrong side (payables, payouts due, payee debts)", result.negative_payables),
        (
            f"channel days whose final bill disagrees with clearing (of {result.channel_days_checked} compared)",
            result.channel_days,
        ),
        ("payee money a settlement skipped", result.unsettled),
        ("settlements disagreeing with their entries", result.settlements),
        ("money owed back to riders for over a day", result.money_back),
        ("channel transfers (payouts) the ledger and the channel disagree on", result.payouts),
    ):
        print(f"{label}: {len(problems)}")
        for problem in problems:
            print(f"  {problem}")
    print("ledger OK" if result.ok else "ledger NOT OK")
    return 0 if result.ok else 1


def _iso_date(text: str) -> Any:
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _no_channels(settings: Settings, configured: int | None = None) -> str | None:
    """Why no channel can be reconciled, or None: a reconciliation of no channel is not a clean one."""
    hint = (
        " (`tzt serve` writes the sandboxes' config to "
        f"{settings.data_dir / 'payment-channels.json'}: TZT_PAYMENT_CONFIG=that path)"
        if settings.is_dev
        else " (docs/operations.md, 'Payments')"
    )
    if settings.payment_config is None:
        return f"no payment configuration: set TZT_PAYMENT_CONFIG to the channels' JSON file{hint}"
    if not settings.payment_config.exists():
        return f"TZT_PAYMENT_CONFIG names {settings.payment_config}, which does not exist{hint}"
    if configured == 0:
        return f"the payment configuration {settings.payment_config} names no channel (alipay, wechat){hint}"
    return None


def _settlement_id(text: str) -> Any:
    import uuid

    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a settlement id (a UUID)") from None


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Matches each configured channel's bill for the business day (Asia/Shanghai) against our orders and
    refunds, stores the report (replacing an earlier one for the day) and prints it. Exits 1 when a channel's
    bill could not be had, 2 when no channel is configured; differences are the report, not a failure."""
    import datetime as dt

    import structlog

    from payments.reconciliation.service import BUSINESS_TZ, render_text

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: the report alone
    day = args.date or dt.datetime.now(BUSINESS_TZ).date() - dt.timedelta(days=1)

    async def run(live: Settings) -> Any:
        from app_backend.composition.wiring import Services

        services = await Services.create(live)
        try:
            if _no_channels(live, len(services.payments.channels)):
                return None
            return await services.payments.reconciliation.run(day)
        finally:
            await services.close()

    settings = load_settings()
    missing, report = _no_channels(settings), None
    if missing is None:
        with backing_services(settings) as live:
            asyncio.run(_migrate(live))
            report = asyncio.run(run(live))
        missing = None if report is not None else _no_channels(settings, 0)
    if missing is not None or report is None:
        print(f"tzt reconcile: nothing reconciled: {missing}", file=sys.stderr)
        return 2
    print(render_text(report))
    return 1 if any(c.status == "failed" for c in report.channels) else 0


def cmd_settle(args: argparse.Namespace) -> int:
    """Settles a business day per payee (idempotent) and prints the settlements; with --pay pays one: by transfer
    to its payee's payout account, or, with --ref, records the bank transfer that paid it; with --payouts runs the
    payouts job once (pending transfers settled, due ones sent, finished ones confirmed with the channel)."""

    async def run(live: Settings) -> tuple[int, list[str]]:
        from app_backend.composition.wiring import Services
        from app_backend.kernel.errors import DomainError

        services = await Services.create(live)
        try:
            payments = services.payments
            if args.payouts:
                counts = await payments.payouts.settle_pending(payments.pool)
                counts.update(await payments.payouts.send_due(payments.pool))
                counts.update(await payments.payouts.confirm(payments.pool))
                return 0, [", ".join(f"{k} {v}" for k, v in counts.items())]
            if args.pay and not args.ref:
                try:
                    payout = await payments.payouts.pay(payments.pool, args.pay)
                except DomainError as exc:
                    return 1, [f"settlement {args.pay} not paid: {exc.detail}"]
                line = (
                    f"settlement {payout.settlement_id}: {payout.channel} transfer {payout.out_biz_no} of "
                    f"{payout.amount_fen} fen to {payout.account}: {payout.status}"
                )
                if payout.status == "pending":
                    line += " (no answer yet: run again, or let the payouts job settle it; never a second transfer)"
                elif payout.status == "failed":
                    line += f" ({payout.failure}; the settlement stays due)"
                else:
                    line += f", channel order {payout.channel_order_id}"
                return (0 if payout.status == "succeeded" else 1), [line]
            async with payments.pool.acquire() as conn, conn.transaction():
                if args.pay:
                    try:
                        paid = await payments.settlement.mark_paid(conn, args.pay, args.ref)
                    except DomainError as exc:
                        return 1, [f"settlement {args.pay} not marked paid: {exc.detail}"]
                    sent, kept = paid.payout_fen - paid.recovered_at_payout_fen, paid.recovered_at_payout_fen
                    return 0, [
                        f"settlement {paid.id} paid: {sent} fen, ref {paid.payout_ref}"
                        + (f" ({kept} of its {paid.payout_fen} kept back: the payee owed us)" if kept else "")
                    ]
                found = await payments.settlement.settle_day(conn, args.date)
            return 0, [
                f"{s.id}  payee {s.payee_id}  #{s.seq}  gross {s.gross_fen}  fees {s.fees_fen}"
                f"  refunds {s.refunds_fen}  owed before {s.owed_before_fen}  net {s.net_fen}  {s.status}"
                + (f" (payee owes {s.owed_after_fen}, carried forward)" if s.owed_after_fen else "")
                for s in found
            ] or ["nothing to settle"]
        finally:
            await services.close()

    if not args.pay and not args.payouts and args.date is None:
        print(
            "give --date YYYY-MM-DD (the business day to settle), --pay SETTLEMENT_ID [--ref REF] or --payouts",
            file=sys.stderr,
        )
        return 2
    with backing_services(load_settings()) as live:
        asyncio.run(_migrate(live))
        status, lines = asyncio.run(run(live))
    print("\n".join(lines))
    return status


def cmd_plan(args: argparse.Namespace) -> int:
    """Sizes a load test from an event's numbers (see app_backend/composition/sizing.py for the model)."""
    from app_backend.composition.sizing import Event, plan, render

    fields = {k: v for k, v in vars(args).items() if k in Event.__dataclass_fields__ and v is not None}
    event = Event(**fields)
    print(render(event, plan(event)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tzt", description="Taizhou Tong backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the whole backend (embedded databases unless URLs are set)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--no-worker", action="store_true", help="do not start the background job worker")
    serve.add_argument("--no-seed", action="store_true")
    serve.add_argument(
        "--no-sandboxes",
        action="store_true",
        help="do not start the payment and mini-program sandboxes (dev)",
    )
    serve.add_argument(
        "--identity-sandbox",
        action="store_true",
        help="dev: run SMS, registry and face checks through the aliyun connectors on a local vendor sandbox",
    )
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("seed", help="load demo data (dev)").set_defaults(func=cmd_seed)
    sub.add_parser("worker", help="run background jobs (SAQ)").set_defaults(func=cmd_worker)
    call = sub.add_parser("call", help="send a signed machine request")
    call.add_argument("method", type=str.upper)
    call.add_argument("path")
    call.add_argument("--data", help="JSON body")
    call.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        help="an extra header, 'Idempotency-Key: …' (repeatable)",
    )
    call.add_argument("--org", help="use this organisation's demo credential")
    call.add_argument("--key-id")
    call.add_argument("--secret")
    call.add_argument("--base", default="http://127.0.0.1:8000")
    call.set_defaults(func=cmd_call)
    staff = sub.add_parser("staff", help="grant a staff role to a resident by phone")
    staff.add_argument("--phone", required=True)
    staff.add_argument("--role", required=True, choices=["ops_admin", "ops_reviewer", "auditor"])
    staff.set_defaults(func=cmd_staff)
    keys = sub.add_parser(
        "keys", help="code-signing keys (or scene-key epochs): list them, or stage the next (rotate)"
    )
    keys.add_argument("action", choices=["list", "rotate"])
    keys.add_argument(
        "--now", action="store_true", help="emergency: a new key signs at once (breaks offline gates)"
    )
    keys.add_argument("--withdraw", action="store_true", help="with --now: unpublish the old key at once")
    keys.add_argument(
        "--oidc", action="store_true", help="the one-login provider's ID-token keys instead of the code keys"
    )
    keys.add_argument(
        "--scene-keys", action="store_true", help="the scene-key epochs instead of the signing keys"
    )
    keys.set_defaults(func=cmd_keys)
    ledger = sub.add_parser("ledger", help="check the ledger's invariants")
    ledger.add_argument("action", choices=["check"])
    ledger.set_defaults(func=cmd_ledger)
    settle = sub.add_parser("settle", help="settle a business day per payee, or pay a settlement")
    settle.add_argument("--date", type=_iso_date, help="YYYY-MM-DD (Asia/Shanghai business day)")
    settle.add_argument(
        "--pay",
        type=_settlement_id,
        help="settlement id to pay: by transfer to its payee's payout account, or by bank with --ref",
    )
    settle.add_argument("--ref", help="the bank transfer reference: --pay records a bank payout")
    settle.add_argument(
        "--payouts", action="store_true", help="run the payouts job once (send, settle by query, confirm)"
    )
    settle.set_defaults(func=cmd_settle)
    from app_backend.composition.sizing import add_arguments

    event_plan = sub.add_parser("plan", help="size a load test from an event's numbers")
    add_arguments(event_plan)
    event_plan.set_defaults(func=cmd_plan)
    reconcile = sub.add_parser("reconcile", help="match the channels' bills of a day against our records")
    reconcile.add_argument(
        "--date",
        type=_iso_date,
        help="business day YYYY-MM-DD (Asia/Shanghai); yesterday when omitted",
    )
    reconcile.set_defaults(func=cmd_reconcile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
