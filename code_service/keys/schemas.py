from __future__ import annotations

from typing import Any

import msgspec


class Jwks(msgspec.Struct):
    keys: list[dict[str, Any]]


class SceneKeyEpoch(msgspec.Struct):
    """One epoch of scene keys as a verifier receives it (docs/code-format.md 5.4)."""

    epoch: str  # 8 hex characters, as carried in codes
    not_before: int  # no code of this epoch is issued before (Unix seconds)
    not_after: int  # no code of this epoch is valid after: drop it then
    keys: dict[str, str]  # scene -> base64url of 32 bytes, only the scenes this verifier may read


class SceneKeysDocument(msgspec.Struct):
    issued_at: int
    refresh_within: int  # seconds: refresh at least this often
    epochs: list[SceneKeyEpoch]
