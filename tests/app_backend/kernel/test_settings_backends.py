"""Production cannot run on dev stand-ins: outside dev and test, a backend setting that names a dev stand-in or an
unknown connector refuses to start, naming the setting (issue 13)."""

from __future__ import annotations

import base64
import secrets

import pytest

from app_backend.kernel.settings import DEV_SECRET_NAMES, _tiles, load_settings


def _production(**backends: str) -> dict[str, str]:
    env = {"TZT_ENV": "production", "TZT_DATA_DIR": "/nonexistent/tzt"}
    env.update(
        {f"TZT_{n.upper()}": base64.b64encode(secrets.token_bytes(32)).decode() for n in DEV_SECRET_NAMES}
    )
    env.update({f"TZT_{name.upper()}_BACKEND": value for name, value in backends.items()})
    return env


@pytest.mark.parametrize("setting", ["sms", "registry", "liveness"])
@pytest.mark.parametrize("value", ["anything-unknown", "dev", "Dev", ""])
def test_production_refuses_an_unknown_or_dev_backend_naming_the_setting(setting, value):
    with pytest.raises(RuntimeError) as refused:
        load_settings(_production(**{setting: value}))
    assert f"TZT_{setting.upper()}_BACKEND" in str(refused.value)


def test_production_with_every_backend_unset_names_all_three():
    # Unset means dev: the defaults are the stand-ins, which production refuses.
    with pytest.raises(RuntimeError) as refused:
        load_settings(_production())
    for setting in ("TZT_SMS_BACKEND", "TZT_REGISTRY_BACKEND", "TZT_LIVENESS_BACKEND"):
        assert setting in str(refused.value)


@pytest.mark.parametrize("env", ["dev", "test"])
def test_dev_and_test_run_on_the_stand_ins(env, tmp_path):
    settings = load_settings({"TZT_ENV": env, "TZT_DATA_DIR": str(tmp_path)})
    assert (settings.sms_backend, settings.registry_backend, settings.liveness_backend) == (
        "dev",
        "dev",
        "dev",
    )
    assert settings.backend_problems() == []


def test_production_starts_on_the_aliyun_connectors_configured_from_the_environment():
    env = _production(sms="aliyun", registry="aliyun", liveness="aliyun")
    env.update(
        {
            "TZT_ALIYUN_ACCESS_KEY_ID": "LTAI5tExample",
            "TZT_ALIYUN_ACCESS_KEY_SECRET": "a-secret-of-the-ram-user",
            "TZT_ALIYUN_SMS_SIGN_NAME": "泰州通",
            "TZT_ALIYUN_SMS_TEMPLATE_OTP": "SMS_1",
            "TZT_ALIYUN_SMS_TEMPLATE_IDENTITY_TAKEN": "SMS_2",
            "TZT_ALIYUN_SMS_TEMPLATE_IDENTITY_CLAIMED": "SMS_3",
            "TZT_ALIYUN_FACE_SCENE_ID": "1000000001",
        }
    )
    settings = load_settings(env)
    assert (settings.sms_backend, settings.registry_backend, settings.liveness_backend) == ("aliyun",) * 3
    assert settings.aliyun.face_scene_id == 1000000001 and settings.aliyun.protocol == "https"
    assert "a-secret-of-the-ram-user" not in repr(settings)


def test_an_aliyun_backend_without_its_settings_refuses_to_start_naming_them():
    with pytest.raises(RuntimeError) as refused:
        load_settings(_production(sms="aliyun", registry="aliyun", liveness="aliyun"))
    for name in ("TZT_ALIYUN_ACCESS_KEY_ID", "TZT_ALIYUN_SMS_TEMPLATE_OTP", "TZT_ALIYUN_FACE_SCENE_ID"):
        assert name in str(refused.value)


def test_the_tile_health_checks_are_off_in_dev_unless_asked_and_on_outside_it(tmp_path):
    dev = load_settings({"TZT_ENV": "dev", "TZT_DATA_DIR": str(tmp_path)})
    assert dev.tiles.health_interval == 0
    asked = load_settings(
        {
            "TZT_ENV": "dev",
            "TZT_DATA_DIR": str(tmp_path),
            "TZT_TILE_HEALTH_INTERVAL": "60",
            "TZT_TILE_HEALTH_TIMEOUT": "2.5",
            "TZT_TILE_HEALTH_FAILURES": "4",
            "TZT_TILE_HEALTH_SUSPEND_MINUTES": "45",
            "TZT_TILE_RETIRE_PERIOD_DAYS": "60",
            "TZT_TILE_RETIRE_MIN_OPENS": "0",
        }
    )
    tiles = asked.tiles
    assert (tiles.health_interval, tiles.health_timeout, tiles.health_failures) == (60, 2.5, 4)
    assert (tiles.health_suspend_minutes, tiles.retire_period_days, tiles.retire_min_opens) == (45, 60, 0)
    assert _tiles({}, "production").health_interval == 300  # outside dev and test: on by default
    for name, value in (("TZT_TILE_HEALTH_TIMEOUT", "0"), ("TZT_TILE_HEALTH_FAILURES", "0")):
        with pytest.raises(ValueError, match=name):
            load_settings({"TZT_ENV": "dev", "TZT_DATA_DIR": str(tmp_path), name: value})


def test_a_tile_broadcasts_period_stays_within_the_opens_kept(tmp_path):
    base = {"TZT_ENV": "dev", "TZT_DATA_DIR": str(tmp_path)}
    default = load_settings(base).tiles
    assert (default.broadcast_days, default.broadcast_max_days) == (90, 90)
    chosen = load_settings(
        {**base, "TZT_TILE_BROADCAST_DAYS": "30", "TZT_TILE_BROADCAST_MAX_DAYS": "180"}
    ).tiles
    assert (chosen.broadcast_days, chosen.broadcast_max_days) == (30, 180)
    for refused in (
        {"TZT_TILE_BROADCAST_DAYS": "120"},  # over the maximum
        {"TZT_TILE_BROADCAST_MAX_DAYS": "500"},  # over the opens kept (400 days)
        {"TZT_TILE_OPENS_RETENTION_DAYS": "60"},
    ):
        with pytest.raises(ValueError, match="TZT_TILE_BROADCAST"):
            load_settings({**base, **refused})
