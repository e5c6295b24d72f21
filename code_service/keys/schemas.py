from __future__ import annotations

from typing import Any

import msgspec


class Jwks(msgspec.Struct):
    keys: list[dict[str, Any]]
