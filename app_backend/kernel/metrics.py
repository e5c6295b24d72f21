"""Counters more than one domain moves (a refusal is counted where it is decided, wherever that is)."""

from __future__ import annotations

from prometheus_client import Counter

RATE_LIMITED = Counter("tzt_rate_limited_total", "Requests refused with 429 by a rate limit", ["principal"])
SHED = Counter("tzt_shed_total", "Requests answered 503 at once instead of queueing", ["reason"])
