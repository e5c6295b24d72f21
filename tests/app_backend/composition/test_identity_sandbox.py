"""`tzt serve --identity-sandbox` in dev: the identity vendors' sandbox starts with the demo people, and the
environment it hands the server and worker runs the `aliyun` connectors against it."""

from __future__ import annotations

import subprocess

from app_backend.composition.sandboxes import start_identity_sandbox
from app_backend.composition.seed import DEMO_PEOPLE, DEMO_PHONES
from app_backend.identity.aliyun import AliyunPopulationRegistry, AliyunSmsSender
from app_backend.identity.sms import otp_message
from app_backend.kernel.settings import load_settings
from payments.sandbox.launch import stop_sandbox


async def test_the_identity_sandbox_serves_the_demo_people_to_the_aliyun_connectors(tmp_path):
    children: list[subprocess.Popen[bytes]] = []
    try:
        env = start_identity_sandbox(tmp_path, children)
        settings = load_settings({"TZT_ENV": "dev", "TZT_DATA_DIR": str(tmp_path), **env})
        assert (settings.sms_backend, settings.registry_backend, settings.liveness_backend) == ("aliyun",) * 3
        registry = AliyunPopulationRegistry(settings.aliyun)
        name, id_number = DEMO_PEOPLE[0]
        assert await registry.matches(None, name, id_number)  # type: ignore[arg-type]
        assert await registry.phone_belongs(None, name, id_number, DEMO_PHONES[id_number][0])  # type: ignore[arg-type]
        await AliyunSmsSender(settings.aliyun).send(DEMO_PHONES[id_number][0], otp_message("654321", 5))
    finally:
        for child in children:
            stop_sandbox(child)
