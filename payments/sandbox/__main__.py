"""Run a payment-channel sandbox on real TCP:

    python -m payments.sandbox alipay --port 9101 --state-dir .data/sandbox/alipay [--host 127.0.0.1] [--app-id …]

Each channel is one entry in CHANNELS: a function that adds its own options to its subparser and one that builds the
ASGI app from the parsed arguments. The app is served in this process by Granian's embedded server (one worker, so
the sandbox's in-memory state is shared by every request). SIGTERM or SIGINT stops it."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _alipay_options(parser: argparse.ArgumentParser) -> None:
    from payments.sandbox.alipay import DEMO_APP_ID, DEMO_SELLER_ID

    parser.add_argument(
        "--app-id", default=DEMO_APP_ID, help="the app id the sandbox accepts (default %(default)s)"
    )
    parser.add_argument(
        "--seller-id", default=DEMO_SELLER_ID, help="the merchant PID in bills and notifications"
    )


def _alipay_app(args: argparse.Namespace) -> Any:
    from payments.sandbox.alipay import create_alipay_sandbox

    # keys live in the state dir itself: app_private_key.pem, app_public_key.pem, alipay_*.pem
    return create_alipay_sandbox(Path(args.state_dir), args.app_id, seller_id=args.seller_id)


def _wechat_options(parser: argparse.ArgumentParser) -> None:
    from payments.sandbox.wechat import add_options

    add_options(parser)


def _wechat_app(args: argparse.Namespace) -> Any:
    from payments.sandbox.wechat import build_app

    return build_app(args)


def _wechat_v3_options(parser: argparse.ArgumentParser) -> None:
    from payments.sandbox.wechat_v3 import add_options

    add_options(parser)


def _wechat_v3_app(args: argparse.Namespace) -> Any:
    from payments.sandbox.wechat_v3 import build_app

    return build_app(args)


@dataclass(frozen=True)
class Channel:
    help: str
    add_options: Callable[[argparse.ArgumentParser], None]
    build_app: Callable[[argparse.Namespace], Any]


CHANNELS: dict[str, Channel] = {
    "alipay": Channel("a local Alipay gateway (RSA2, /gateway.do)", _alipay_options, _alipay_app),
    "wechat": Channel("a local WeChat Pay v2 API (signed XML, papay)", _wechat_options, _wechat_app),
    "wechat_v3": Channel(
        "a local WeChat Pay v3 API (signed JSON, platform certificates, encrypted notifications)",
        _wechat_v3_options,
        _wechat_v3_app,
    ),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m payments.sandbox", description=__doc__.split("\n\n")[0])
    channels = parser.add_subparsers(dest="channel", required=True, metavar="CHANNEL")
    for name, channel in CHANNELS.items():
        sub = channels.add_parser(name, help=channel.help)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, required=True)
        sub.add_argument("--state-dir", required=True, help="where the sandbox keeps its keys")
        channel.add_options(sub)
    return parser.parse_args(argv)


async def _serve(app: Any, host: str, port: int) -> None:
    from granian.constants import Interfaces
    from granian.server.embed import Server

    server = Server(
        app, address=host, port=port, interface=Interfaces.ASGI, log_access=False, websockets=False
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    Path(args.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    app = CHANNELS[args.channel].build_app(args)
    asyncio.run(_serve(app, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
