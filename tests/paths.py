"""Where the project's files are, for tests that read them (vectors, sources, the CLI)."""

from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
TEST_VECTORS = PROJECT / "docs" / "test-vectors"
