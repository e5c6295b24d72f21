from __future__ import annotations

from tests.code_service.entry.helpers import forget_printed_tickets  # noqa: F401 (an autouse fixture)
