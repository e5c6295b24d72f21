"""Run a mini-program sandbox on real TCP, as the payment sandboxes run (payments/sandbox/launch.py starts it with
`module="mini_programs.sandbox"`):

    python -m mini_programs.sandbox wechat --port 9201 --state-dir .data/sandbox/wechat-mini [--app-id wx…]
    python -m mini_programs.sandbox alipay --port 9202 --state-dir .data/sandbox/alipay-mini [--app-id 2021…]

One Granian worker, so the sandbox's in-memory state is shared by every request. SIGTERM or SIGINT stops it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from payments.sandbox.__main__ import _serve


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mini_programs.sandbox import alipay, wechat

    parser = argparse.ArgumentParser(prog="python -m mini_programs.sandbox")
    channels = parser.add_subparsers(dest="channel", required=True, metavar="CHANNEL")
    for name, module in (("wechat", wechat), ("alipay", alipay)):
        sub = channels.add_parser(name, help=(module.__doc__ or "").split("\n")[0])
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, required=True)
        sub.add_argument("--state-dir", required=True, help="where the sandbox keeps its apps and keys")
        module.add_options(sub)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from mini_programs.sandbox import alipay, wechat

    args = parse_args(argv)
    Path(args.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    app = (wechat if args.channel == "wechat" else alipay).build_app(args)
    asyncio.run(_serve(app, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
