"""The engine/shop layout holds: the engine imports nothing of the shop, and
only the queue operations write an order's status."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

ENGINE = ROOT / "workers"
SHOP = ROOT / "orders"


def modules(app: Path) -> list[Path]:
    return [p for p in app.rglob("*.py") if "migrations" not in p.parts]


def imported(path: Path) -> set[str]:
    """Every module the file imports, at the top, in functions or under TYPE_CHECKING."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_engine_imports_nothing_of_the_shop_or_the_project() -> None:
    arrows = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(ENGINE)
        for name in imported(path)
        if name.split(".")[0] in ("orders", "pizzaqueue")
    }
    assert arrows == set()


def test_the_import_walk_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from orders import views\n")
    assert imported(module) == {"orders"}


def status_writes(path: Path) -> list[str]:
    """`Order.objects….update(status=…)` (or with a `**` of fields) calls in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("update", "bulk_update", "save") or "Order.objects" not in ast.unparse(node.func):
            continue
        if any(k.arg in ("status", None) for k in node.keywords) or node.func.attr == "bulk_update":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_the_queue_operations_write_an_orders_status() -> None:
    writes = [w for app in (ENGINE, SHOP) for path in modules(app) for w in status_writes(path)]
    assert writes, "the scan found no status write at all: it is not looking"
    assert {w.split(":")[0] for w in writes} <= {
        "workers/queue/intake.py",
        "workers/queue/leases.py",
        "workers/queue/operators.py",
        "workers/recovery.py",
    }


def written_sql(path: Path) -> list[int]:
    """Lines of `execute(...)` calls whose statement is spelled out there (a string, an f-string, a `+` or `%`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "execute"):
            continue
        if node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
            found.append(node.lineno)
    return found


def test_every_statement_is_called_by_name_from_its_apps_sql_module() -> None:
    spelled_out = [
        f"{path.relative_to(ROOT)}:{line}"
        for app in (ENGINE, SHOP)
        for path in modules(app)
        for line in written_sql(path)
    ]
    assert spelled_out == []


def test_the_sql_scan_sees_a_statement_written_at_the_call(tmp_path: Path) -> None:
    module = tmp_path / "inline.py"
    module.write_text("def f(cursor, name):\n    cursor.execute(f'LISTEN {name}')\n    cursor.execute(STATEMENT)\n")
    assert written_sql(module) == [2]
