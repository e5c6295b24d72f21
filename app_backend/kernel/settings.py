"""Settings come from the environment only; a dev data key may be generated into the local data folder."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import TypedDict

import msgspec

DEV_SECRET_NAMES = (
    "data_key",
    "index_key",
    "jwt_secret",
    "liveness_secret",
    "token_pepper",
    "pairwise_secret",
)

# The connectors to outside services each backend setting may name outside dev and test. "dev" (the outbox, the
# seeded registry, the self-signing liveness vendor) is never one of them. "aliyun": Alibaba Cloud's SMS service
# and ID Verification (app_backend/identity/aliyun.py, docs/decisions/0016-identity-vendors.md).
PRODUCTION_BACKENDS: dict[str, frozenset[str]] = {
    "sms_backend": frozenset({"aliyun"}),
    "registry_backend": frozenset({"aliyun"}),
    "liveness_backend": frozenset({"aliyun"}),
}


class AliyunSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Alibaba Cloud's SMS service and ID Verification (cloudauth), for the backends set to `aliyun`. The access
    key pair is a secret: it is read from the environment only and never logged or shown (its repr hides it)."""

    access_key_id: str = ""
    access_key_secret: str = msgspec.field(default="")
    # host[:port] for both products; empty: the vendor's public endpoints (dysmsapi / cloudauth.aliyuncs.com).
    endpoint: str = ""
    protocol: str = "https"
    timeout: float = 5.0
    sms_sign_name: str = ""
    sms_template_otp: str = ""
    sms_template_identity_taken: str = ""
    sms_template_identity_claimed: str = ""
    face_scene_id: int = 0
    face_product_code: str = "ID_PRO"

    def __repr__(self) -> str:
        return (
            f"AliyunSettings(access_key_id={self.access_key_id!r}, access_key_secret='***', "
            f"endpoint={self.endpoint!r}, protocol={self.protocol!r})"
        )

    def problems(self, backends: set[str]) -> list[str]:
        """What is missing for the backends (sms, registry, liveness) set to `aliyun`."""
        if not backends:
            return []
        required = {
            "TZT_ALIYUN_ACCESS_KEY_ID": self.access_key_id,
            "TZT_ALIYUN_ACCESS_KEY_SECRET": self.access_key_secret,
        }
        if "sms" in backends:
            required |= {
                "TZT_ALIYUN_SMS_SIGN_NAME": self.sms_sign_name,
                "TZT_ALIYUN_SMS_TEMPLATE_OTP": self.sms_template_otp,
                "TZT_ALIYUN_SMS_TEMPLATE_IDENTITY_TAKEN": self.sms_template_identity_taken,
                "TZT_ALIYUN_SMS_TEMPLATE_IDENTITY_CLAIMED": self.sms_template_identity_claimed,
            }
        if "liveness" in backends:
            required["TZT_ALIYUN_FACE_SCENE_ID"] = str(self.face_scene_id or "")
        problems = [
            f"{name} is required by the aliyun connectors" for name, value in required.items() if not value
        ]
        if self.protocol not in {"https", "http"}:
            problems.append("TZT_ALIYUN_PROTOCOL must be https (or http, for a local sandbox)")
        return problems


class TileSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Service tiles' health checks, usage figures and retirement candidates (docs/operations.md, "Service
    tiles")."""

    # Seconds between two probes of a tile; 0 turns the health checks off (the default in dev and test, whose demo
    # tiles name hosts that do not exist).
    health_interval: int = 300
    # Seconds one probe may take (connect, TLS, the answer's status line).
    health_timeout: float = 5.0
    # Consecutive failed rounds before a tile is degraded (residents see it as temporarily unavailable).
    health_failures: int = 3
    # Minutes of failing before a degraded tile whose department asked for it (`auto_suspend`) is suspended.
    health_suspend_minutes: int = 30
    # Probes in flight at once (per worker running the job).
    health_concurrency: int = 16
    # Days probes are kept (the daily counts of probes, failures and outages are kept with the usage figures).
    health_history_days: int = 7
    # Days residents' opens are kept (who opened what); older days keep only their counts.
    opens_retention_days: int = 400
    # A live tile is a retirement candidate when, over the last `retire_period_days` (and published before them),
    # it was opened fewer than `retire_min_opens` times or was degraded at least `retire_max_outages` times.
    retire_period_days: int = 90
    retire_min_opens: int = 100
    retire_max_outages: int = 3
    # A department's broadcast to the users of its tile reaches the residents who opened it in the last
    # `broadcast_days` days unless it names its own period, of at most `broadcast_max_days` (within the retention).
    broadcast_days: int = 90
    broadcast_max_days: int = 90


class MaskingRule(msgspec.Struct, frozen=True):
    head: int
    tail: int


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    env: str = "dev"
    data_dir: Path = Path(".data")
    database_url: str = ""
    redis_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    log_level: str = "INFO"
    # 32-byte keys, base64. AES-GCM for personal data at rest; HMAC for blind indexes; HMAC for access tokens.
    data_key: bytes = b""
    index_key: bytes = b""
    jwt_secret: bytes = b""
    jwt_kid: str = "k1"
    liveness_secret: bytes = b""
    token_pepper: bytes = b""
    # One login (app_backend/oidc): the HMAC key of pairwise subjects. Changing it changes every department's `sub`
    # for every resident, so it is kept like the data key.
    pairwise_secret: bytes = b""
    # Access tokens and ID tokens the provider gives departments (at most 10 minutes); its browser sessions.
    oidc_access_token_ttl: int = 600
    oidc_session_max_age: int = 12 * 3600
    access_token_ttl: int = 900
    refresh_token_ttl: int = 7 * 24 * 3600
    session_max_age: int = 30 * 24 * 3600
    otp_ttl: int = 300
    otp_max_attempts: int = 5
    # One-time codes (docs/decisions/0007-otp-caps-never-lock-the-owner-out.md): a phone gets at most
    # `otp_sends_per_phone` codes in any `otp_send_window` seconds whoever asks, and one requester (client address)
    # at most `otp_sends_per_requester` of them, a minute apart; nothing holds a phone for longer than the window.
    otp_cooldown: int = 60
    otp_send_window: int = 600
    otp_sends_per_phone: int = 5
    otp_sends_per_requester: int = 3
    otp_daily_per_ip: int = 50
    signature_window: int = 300
    max_body_bytes: int = 64 * 1024
    audit_retention_days: int = 185
    # Days a code-signing key signs before the cron job stages its successor (docs/operations.md).
    key_rotation_days: int = 30
    mask_id_number: MaskingRule = MaskingRule(3, 4)
    mask_phone: MaskingRule = MaskingRule(3, 4)
    mask_name: MaskingRule = MaskingRule(1, 0)
    trusted_proxies: frozenset[str] = frozenset()
    public_base_url: str = "http://127.0.0.1:8000"
    payment_config: Path | None = None
    # The mini-programs' app ids and where their secrets are (mini_programs/config.py, docs/operations.md).
    mini_program_config: Path | None = None
    sms_backend: str = "dev"
    registry_backend: str = "dev"
    liveness_backend: str = "dev"
    aliyun: AliyunSettings = AliyunSettings()
    tiles: TileSettings = TileSettings()
    # Protection under surges (docs/operations.md, "Protection").
    rate_resident_per_minute: int = 120
    rate_organisation_per_second: int = 3000
    max_in_flight: int = 256
    backlog: int = 4096
    backpressure: int = 4096
    redis_timeout: float = 1.0
    db_acquire_timeout: float = 1.5
    # -- Database roles and the internal listener (docs/operations.md, "Database roles", "Internal listener") --
    # The owner's URL: migrations run as it, the server never. Empty: DATABASE_URL migrates too (dev only).
    migration_database_url: str = ""
    # Docs and metrics outside dev are served only here (127.0.0.1 by default); 0: not at all.
    internal_host: str = "127.0.0.1"
    internal_port: int = 0
    # Set in the processes `tzt serve` starts behind the internal listener.
    internal_listener: bool = False

    @property
    def is_dev(self) -> bool:
        return self.env in {"dev", "test"}

    def backend_problems(self) -> list[str]:
        """Why these settings cannot start: a connector's missing settings, and outside dev and test each backend
        setting naming a dev stand-in or an unknown connector (in dev and test the dev stand-ins are the point)."""
        problems = self.aliyun.problems(
            {n.removesuffix("_backend") for n in PRODUCTION_BACKENDS if getattr(self, n) == "aliyun"}
        )
        if self.is_dev:
            return problems
        for name, known in PRODUCTION_BACKENDS.items():
            value = getattr(self, name)
            if value not in known:
                offered = ", ".join(sorted(known)) or "none exists yet: production cannot start"
                problems.append(
                    f"TZT_{name.upper()}={value!r} is not a production {name.removesuffix('_backend')} "
                    f"connector (known: {offered})"
                )
        return problems

    def refuse_dev_stand_ins(self) -> None:
        """Raises (naming each setting) when this is not dev or test and a backend is a dev or unknown one, or a
        configured connector lacks its settings."""
        problems = self.backend_problems()
        if problems:
            raise RuntimeError(f"TZT_ENV={self.env!r} cannot start its backends: " + "; ".join(problems))


def _b64(value: str) -> bytes:
    raw = base64.b64decode(value)
    if len(raw) < 32:
        raise ValueError("keys must be at least 32 bytes (base64-encoded)")
    return raw


def _dev_secrets(data_dir: Path) -> dict[str, bytes]:
    """Dev keys live in the data folder (never committed); production must pass them in the environment."""
    path = data_dir / "dev-secrets.json"
    data_dir.mkdir(parents=True, exist_ok=True)
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for name in DEV_SECRET_NAMES:
        if name not in stored:
            stored[name] = base64.b64encode(secrets.token_bytes(32)).decode()
            changed = True
    if changed:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh, indent=1)
    return {name: base64.b64decode(stored[name]) for name in DEV_SECRET_NAMES}


def default_workers() -> int:
    """Several Granian workers per node: one per core, at least two (one busy worker must not stall a node)."""
    return max(2, os.cpu_count() or 2)


def _positive(env: dict[str, str], name: str, default: int) -> int:
    value = int(env.get(name, str(default)))
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer")
    return value


class _RolesAndListeners(TypedDict):
    migration_database_url: str
    internal_host: str
    internal_port: int
    internal_listener: bool


def _roles_and_listeners(env: dict[str, str], mode: str) -> _RolesAndListeners:
    """Database roles and the internal listener: outside dev the internal listener is on by default (9000), since
    it is where operations read metrics; in dev docs and metrics stay on the main port."""
    default_port = "0" if mode in {"dev", "test"} else "9000"
    return {
        "migration_database_url": env.get("MIGRATION_DATABASE_URL", ""),
        "internal_host": env.get("TZT_INTERNAL_HOST", "127.0.0.1"),
        "internal_port": int(env.get("TZT_INTERNAL_PORT", default_port)),
        "internal_listener": env.get("TZT_LISTENER", "public") == "internal",
    }


def _aliyun(env: dict[str, str]) -> AliyunSettings:
    return AliyunSettings(
        access_key_id=env.get("TZT_ALIYUN_ACCESS_KEY_ID", ""),
        access_key_secret=env.get("TZT_ALIYUN_ACCESS_KEY_SECRET", ""),
        endpoint=env.get("TZT_ALIYUN_ENDPOINT", ""),
        protocol=env.get("TZT_ALIYUN_PROTOCOL", "https"),
        timeout=float(env.get("TZT_ALIYUN_TIMEOUT", "5")),
        sms_sign_name=env.get("TZT_ALIYUN_SMS_SIGN_NAME", ""),
        sms_template_otp=env.get("TZT_ALIYUN_SMS_TEMPLATE_OTP", ""),
        sms_template_identity_taken=env.get("TZT_ALIYUN_SMS_TEMPLATE_IDENTITY_TAKEN", ""),
        sms_template_identity_claimed=env.get("TZT_ALIYUN_SMS_TEMPLATE_IDENTITY_CLAIMED", ""),
        face_scene_id=int(env.get("TZT_ALIYUN_FACE_SCENE_ID", "0")),
        face_product_code=env.get("TZT_ALIYUN_FACE_PRODUCT_CODE", "ID_PRO"),
    )


def _non_negative(env: dict[str, str], name: str, default: int) -> int:
    value = int(env.get(name, str(default)))
    if value < 0:
        raise ValueError(f"{name} must be zero or a positive integer")
    return value


def _tiles(env: dict[str, str], mode: str) -> TileSettings:
    timeout = float(env.get("TZT_TILE_HEALTH_TIMEOUT", "5"))
    if not 0 < timeout <= 60:
        raise ValueError("TZT_TILE_HEALTH_TIMEOUT must be more than 0 and at most 60 seconds")
    retention = _positive(env, "TZT_TILE_OPENS_RETENTION_DAYS", 400)
    broadcast_days = _positive(env, "TZT_TILE_BROADCAST_DAYS", 90)
    broadcast_max_days = _positive(env, "TZT_TILE_BROADCAST_MAX_DAYS", 90)
    if not broadcast_days <= broadcast_max_days <= retention:
        raise ValueError(
            "TZT_TILE_BROADCAST_DAYS must be at most TZT_TILE_BROADCAST_MAX_DAYS, and that at most "
            "TZT_TILE_OPENS_RETENTION_DAYS (older opens are not kept)"
        )
    return TileSettings(
        health_interval=_non_negative(env, "TZT_TILE_HEALTH_INTERVAL", 0 if mode in {"dev", "test"} else 300),
        health_timeout=timeout,
        health_failures=_positive(env, "TZT_TILE_HEALTH_FAILURES", 3),
        health_suspend_minutes=_positive(env, "TZT_TILE_HEALTH_SUSPEND_MINUTES", 30),
        health_concurrency=_positive(env, "TZT_TILE_HEALTH_CONCURRENCY", 16),
        health_history_days=_positive(env, "TZT_TILE_HEALTH_HISTORY_DAYS", 7),
        opens_retention_days=retention,
        retire_period_days=_positive(env, "TZT_TILE_RETIRE_PERIOD_DAYS", 90),
        retire_min_opens=_non_negative(env, "TZT_TILE_RETIRE_MIN_OPENS", 100),
        retire_max_outages=_positive(env, "TZT_TILE_RETIRE_MAX_OUTAGES", 3),
        broadcast_days=broadcast_days,
        broadcast_max_days=broadcast_max_days,
    )


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    mode = env.get("TZT_ENV", "dev")
    data_dir = Path(env.get("TZT_DATA_DIR", ".data")).resolve()
    keys: dict[str, bytes] = {}
    for name in DEV_SECRET_NAMES:
        value = env.get(f"TZT_{name.upper()}")
        if value:
            keys[name] = _b64(value)
    missing = [n for n in DEV_SECRET_NAMES if n not in keys]
    if missing:
        if mode not in {"dev", "test"}:
            raise RuntimeError(
                f"missing secrets in the environment: {', '.join('TZT_' + m.upper() for m in missing)}"
            )
        generated = _dev_secrets(data_dir)
        keys.update({n: generated[n] for n in missing})
    settings = Settings(
        env=mode,
        data_dir=data_dir,
        database_url=env.get("DATABASE_URL", ""),
        redis_url=env.get("REDIS_URL", ""),
        host=env.get("TZT_HOST", "127.0.0.1"),
        port=int(env.get("TZT_PORT", "8000")),
        workers=int(env.get("TZT_WORKERS", "0")) or default_workers(),
        log_level=env.get("TZT_LOG_LEVEL", "INFO"),
        jwt_kid=env.get("TZT_JWT_KID", "k1"),
        otp_send_window=_positive(env, "TZT_OTP_SEND_WINDOW", 600),
        otp_sends_per_phone=_positive(env, "TZT_OTP_SENDS_PER_PHONE", 5),
        otp_sends_per_requester=_positive(env, "TZT_OTP_SENDS_PER_REQUESTER", 3),
        otp_daily_per_ip=int(env.get("TZT_OTP_DAILY_PER_IP", "50")),
        trusted_proxies=frozenset(p for p in env.get("TZT_TRUSTED_PROXIES", "").split(",") if p),
        public_base_url=env.get("TZT_PUBLIC_BASE_URL", f"http://127.0.0.1:{env.get('TZT_PORT', '8000')}"),
        payment_config=Path(env["TZT_PAYMENT_CONFIG"]) if env.get("TZT_PAYMENT_CONFIG") else None,
        mini_program_config=(
            Path(env["TZT_MINI_PROGRAM_CONFIG"]) if env.get("TZT_MINI_PROGRAM_CONFIG") else None
        ),
        sms_backend=env.get("TZT_SMS_BACKEND", "dev"),
        registry_backend=env.get("TZT_REGISTRY_BACKEND", "dev"),
        liveness_backend=env.get("TZT_LIVENESS_BACKEND", "dev"),
        aliyun=_aliyun(env),
        tiles=_tiles(env, mode),
        rate_resident_per_minute=_positive(env, "TZT_RATE_RESIDENT_PER_MINUTE", 120),
        rate_organisation_per_second=_positive(env, "TZT_RATE_ORGANISATION_PER_SECOND", 3000),
        max_in_flight=_positive(env, "TZT_MAX_IN_FLIGHT", 256),
        backlog=_positive(env, "TZT_BACKLOG", 4096),
        backpressure=_positive(env, "TZT_BACKPRESSURE", 4096),
        redis_timeout=float(env.get("TZT_REDIS_TIMEOUT", "1.0")),
        key_rotation_days=_positive(env, "TZT_KEY_ROTATION_DAYS", 30),
        db_acquire_timeout=float(env.get("TZT_DB_ACQUIRE_TIMEOUT", "1.5")),
        **_roles_and_listeners(env, mode),
        data_key=keys["data_key"],
        index_key=keys["index_key"],
        jwt_secret=keys["jwt_secret"],
        liveness_secret=keys["liveness_secret"],
        token_pepper=keys["token_pepper"],
        pairwise_secret=keys["pairwise_secret"],
        oidc_access_token_ttl=min(600, _positive(env, "TZT_OIDC_ACCESS_TOKEN_TTL", 600)),
        oidc_session_max_age=_positive(env, "TZT_OIDC_SESSION_MAX_AGE", 12 * 3600),
    )
    settings.refuse_dev_stand_ins()
    return settings
