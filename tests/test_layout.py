"""The rules of docs/../DESIGN.md that code can check: package boundaries and where SQL lives."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOMAINS = ("code_service", "payments", "mini_programs")
_SQL = re.compile(
    r"^\s*(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\.\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS)\b",
    re.IGNORECASE | re.DOTALL,
)


def _python_files(*packages: str) -> list[Path]:
    return [p for pkg in packages for p in (ROOT / pkg).rglob("*.py")]


def test_domain_packages_never_import_app_backend():
    offenders = []
    for path in _python_files(*DOMAINS):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "app_backend"]
    assert offenders == []


def test_sql_lives_only_in_repositories():
    offenders = []
    for path in _python_files("app_backend", *DOMAINS):
        # infra holds the bootstrap itself (creating the database, the migrations ledger), not domain SQL.
        if path.name == "repository.py" or "migrations" in path.parts or "infra" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.match(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_every_domain_module_has_the_same_files():
    expected = {"controllers.py", "service.py", "repository.py", "schemas.py", "tasks.py"}
    modules = [p for p in (ROOT / "code_service").iterdir() if (p / "controllers.py").exists()]
    modules += [
        p for p in (ROOT / "app_backend").iterdir() if (p / "controllers.py").exists() and p.name != "ops"
    ]
    assert modules
    for module in modules:
        assert expected <= {f.name for f in module.iterdir()}, module.name


def test_the_gate_verifier_needs_no_server_dependencies():
    probe = (
        "import sys, code_service.verifier, code_service.holder;"
        "heavy = {'litestar', 'asyncpg', 'redis', 'msgspec', 'app_backend', 'structlog'} & "
        "{m.split('.')[0] for m in sys.modules}; print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_pooled_connections_keep_no_session_state():
    """The pool skips asyncpg's reset query on release (app_backend/infra/db.py): nothing may leave session state
    on a pooled connection. Session-level locks, LISTEN and SET are for dedicated connections (migrations)."""
    session_sql = re.compile(
        r"pg_advisory_lock|pg_try_advisory_lock\(|\bLISTEN\b|(\A|;)\s*SET\s+(SESSION\s+)?\w+\s*(=|TO)\s"
    )
    offenders = []
    for path in _python_files("app_backend", *DOMAINS):
        if path.name == "migrations.py":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(ROOT)}: add_listener"] if "add_listener" in text else []
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and session_sql.search(node.value)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
