"""The rules of the design (docs/architecture.md) that code can check: who may import whom, where SQL lives, what
services may not know about, and the gate verifier's independence."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_DOMAINS = ("code_service", "payments", "mini_programs")
_SQL = re.compile(
    r"^\s*(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\.\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS)\b",
    re.IGNORECASE | re.DOTALL,
)


def _python_files(*packages: str) -> list[Path]:
    return [p for pkg in packages for p in (ROOT / pkg).rglob("*.py")]


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


def _server_files() -> list[Path]:
    """Everything that runs in the server, the kernel and the composition included."""
    return _python_files("app_backend", *TOP_DOMAINS)


def test_nothing_imports_the_composition():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _server_files()
        if not path.is_relative_to(ROOT / "app_backend" / "composition")
        for name in _imports(path)
        if name.startswith("app_backend.composition")
    ]
    assert offenders == []


def _domain_of(path: Path) -> str:
    """code_service, payments, mini_programs, or app_backend's domain (identity, audit, ...); kernel and
    composition are not domains."""
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "app_backend" else parts[0]


def _domain_of_module(name: str) -> str:
    parts = name.split(".")
    return parts[1] if parts[0] == "app_backend" and len(parts) > 1 else parts[0]


def test_domains_use_each_other_only_through_public_services():
    """A domain may import another's services and schemas, never its repositories or controllers."""
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _server_files()
        if _domain_of(path) not in ("kernel", "composition")
        for name in _imports(path)
        if name.split(".")[-1] in ("repository", "controllers")
        and _domain_of_module(name) not in (_domain_of(path), "kernel", "composition")
        and name.split(".")[0] in ("app_backend", *TOP_DOMAINS)
    ]
    assert offenders == []


def test_production_code_never_imports_the_load_tests_or_the_tests():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _server_files()
        for name in _imports(path)
        if name.split(".")[0] in ("loadtests", "tests")
    ]
    assert offenders == []


def test_the_kernel_imports_no_domain():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _python_files("app_backend/kernel")
        for name in _imports(path)
        if name.split(".")[0] in ("app_backend", *TOP_DOMAINS) and not name.startswith("app_backend.kernel")
    ]
    assert offenders == []


def test_every_domain_is_in_the_module_list():
    from app_backend.composition.modules import MODULES

    listed = {module.start.__module__ for module in MODULES}
    found = [*ROOT.glob("*/module.py"), *(ROOT / "app_backend").glob("*/module.py")]
    modules = {p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".") for p in found}
    modules.discard("app_backend.kernel.module")
    assert modules == listed


def test_domains_hold_no_placeholder_files():
    """Only files with content: a file whose code is nothing but a docstring or a pass does not exist."""
    offenders = []
    for path in _server_files():
        if path.name == "__init__.py":
            continue
        body = ast.parse(path.read_text(encoding="utf-8")).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        code = [n for n in code if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
        if not code:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_sql_lives_only_in_repositories():
    offenders = []
    for path in _server_files():
        # The composition's bootstrap (creating the database, the migrations ledger) is not domain SQL.
        if path.name == "repository.py" or "migrations" in path.parts or "composition" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.match(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_services_know_nothing_of_http():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _server_files()
        if path.name == "service.py"
        for name in _imports(path)
        if name.split(".")[0] == "litestar"
    ]
    assert offenders == []


def test_the_gate_verifier_needs_no_server_dependencies():
    probe = (
        "import sys, code_service.verifier, code_service.holder;"
        "heavy = {'litestar', 'asyncpg', 'redis', 'msgspec', 'app_backend', 'structlog', 'payments'} & "
        "{m.split('.')[0] for m in sys.modules}; print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_pooled_connections_keep_no_session_state():
    """The pool skips asyncpg's reset query on release (app_backend/kernel/db.py): nothing may leave session
    state on a pooled connection. Session-level locks, LISTEN and SET are for dedicated connections (the
    migrator)."""
    session_sql = re.compile(
        r"pg_advisory_lock|pg_try_advisory_lock\(|\bLISTEN\b|(\A|;)\s*SET\s+(SESSION\s+)?\w+\s*(=|TO)\s"
    )
    offenders = []
    for path in _server_files():
        if path.name == "migrator.py":
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


def test_tests_mirror_the_packages():
    """A feature's tests are found where its source is: tests/<package>/<domain>/… mirrors <package>/<domain>/;
    only the architecture's own tests sit at the top."""
    tests = ROOT / "tests"
    top_level = sorted(p.name for p in tests.glob("test_*.py"))
    assert top_level == ["test_layout.py"]
    strays = [
        str(folder.relative_to(tests))
        for folder in tests.rglob("*")
        if folder.is_dir()
        and folder.name != "__pycache__"
        and any(folder.glob("test_*.py"))
        and not (ROOT / folder.relative_to(tests)).is_dir()
    ]
    assert strays == []
