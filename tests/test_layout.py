"""The engine/shop layout holds: the engine imports nothing of the shop, and
only the queue operations write an order's status. The tests keep it too: the
engine's tests import nothing of the shop, and no two tests share a name."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.base import ROOT

ENGINE = ROOT / "workers"
SHOP = ROOT / "orders"
TESTS = ROOT / "tests"


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


STATUS_FIELDS = ("status", "handover")


def bulk_fields(node: ast.Call) -> set[str] | None:
    """The fields a `bulk_update(objs, [fields…])` call writes, when they are spelled out."""
    fields = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "fields"), None)
    if not isinstance(fields, (ast.List, ast.Tuple)):
        return None
    names = {e.value for e in fields.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return names if len(names) == len(fields.elts) else None


def status_writes(path: Path) -> list[str]:
    """`Order.objects….update(status=…)` or `handover=…` (or with a `**` of fields) calls in the file,
    and `bulk_update` calls that write either (or fields not spelled out)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("update", "bulk_update", "save") or "Order.objects" not in ast.unparse(node.func):
            continue
        if node.func.attr == "bulk_update":
            fields = bulk_fields(node)
            writes_status = fields is None or bool(fields & set(STATUS_FIELDS))
        else:
            writes_status = any(k.arg in (*STATUS_FIELDS, None) for k in node.keywords)
        if writes_status:
            found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{node.lineno}")
    return found


def test_the_status_scan_tells_a_bulk_status_write_from_another_bulk_write(tmp_path: Path) -> None:
    module = tmp_path / "scan_probe.py"
    module.write_text(
        "Order.objects.bulk_update(orders, ['promised_at'])\n"
        "Order.objects.bulk_update(orders, ['status', 'finished_at'])\n"
        "Order.objects.bulk_update(orders, fields)\n"
    )
    assert status_writes(module) == ["scan_probe.py:2", "scan_probe.py:3"]


def test_only_the_queue_operations_write_an_orders_status() -> None:
    writes = [w for app in (ENGINE, SHOP) for path in modules(app) for w in status_writes(path)]
    assert writes, "the scan found no status write at all: it is not looking"
    assert {w.split(":")[0] for w in writes} <= {
        "workers/queue/handover.py",
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


def imported_on_load(path: Path) -> set[str]:
    """The modules that loading the file imports: `imported` less what only a function imports when called."""
    names: set[str] = set()
    nodes: list[ast.AST] = list(ast.parse(path.read_text()).body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        nodes.extend(ast.iter_child_nodes(node))
    return names


def shop_imports_of(tests: Path, root: Path) -> set[str]:
    """Every way a test module under `tests` reaches `orders`: an import of its own, or
    one run by loading a test module it imports (`tests.base`, `tests.conftest`…)."""
    arrows = set()
    for path in sorted(tests.rglob("*.py")):
        for name in imported(path):
            kit = root / (name.replace(".", "/") + ".py")
            through = imported_on_load(kit) if name.startswith("tests.") and kit.exists() else set()
            for reached in {name} | through:
                if reached.split(".")[0] == "orders":
                    via = "" if reached == name else f" through {name}"
                    arrows.add(f"{path.relative_to(root)} imports {reached}{via}")
    return arrows


def test_the_engines_tests_import_nothing_of_the_shop() -> None:
    assert list((TESTS / "engine").glob("test_*.py")), "no engine tests found: the scan is not looking"
    assert shop_imports_of(TESTS / "engine", ROOT) == set()


def test_the_shop_import_scan_sees_an_import_through_a_test_module(tmp_path: Path) -> None:
    (tmp_path / "tests" / "engine").mkdir(parents=True)
    (tmp_path / "tests" / "kit.py").write_text("from orders.intake import clean_order_request\n")
    (tmp_path / "tests" / "lazy.py").write_text("def roles():\n    from orders import roles\n")
    (tmp_path / "tests" / "engine" / "test_a.py").write_text("from tests.kit import x\nfrom tests.lazy import roles\n")
    (tmp_path / "tests" / "engine" / "test_b.py").write_text("import orders.models\n")

    assert shop_imports_of(tmp_path / "tests" / "engine", tmp_path) == {
        "tests/engine/test_a.py imports orders.intake through tests.kit",
        "tests/engine/test_b.py imports orders.models",
    }


def defined_test_names(path: Path) -> list[str]:
    """The names of the tests the file defines, as functions or as methods of a class."""
    body = ast.parse(path.read_text()).body
    defined = [*body, *(node for cls in body if isinstance(cls, ast.ClassDef) for node in cls.body)]
    return [
        node.name
        for node in defined
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
    ]


def repeated_test_names(tests: Path) -> dict[str, list[str]]:
    """Test names defined more than once under `tests`, with where."""
    where: dict[str, list[str]] = {}
    for path in sorted(tests.rglob("test_*.py")):
        for name in defined_test_names(path):
            where.setdefault(name, []).append(str(path.relative_to(tests)))
    return {name: paths for name, paths in where.items() if len(paths) > 1}


def test_no_two_tests_share_a_name() -> None:
    assert repeated_test_names(TESTS) == {}


def test_the_name_scan_sees_a_name_repeated_across_folders(tmp_path: Path) -> None:
    (tmp_path / "engine").mkdir()
    (tmp_path / "shop").mkdir()
    (tmp_path / "engine" / "test_a.py").write_text("def test_it_works():\n    pass\n")
    (tmp_path / "shop" / "test_a.py").write_text("class TestIt:\n    async def test_it_works(self):\n        pass\n")

    assert repeated_test_names(tmp_path) == {"test_it_works": ["engine/test_a.py", "shop/test_a.py"]}
