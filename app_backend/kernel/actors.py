"""Who acts, as every domain records it (audit trail, data-access history)."""

from __future__ import annotations

from typing import Annotated

import msgspec

# Why an actor does something sensitive (a block, a reveal, an override): required, and kept in the audit trail.
Reason = Annotated[
    str, msgspec.Meta(min_length=4, max_length=500, description="why; kept in the audit trail")
]


class Actor(msgspec.Struct, frozen=True):
    """Who acts: a resident, a staff member, an organisation's credential, or the CLI. Carries request context."""

    type: str
    id: str
    request_id: str = ""
    ip: str = ""
