"""Where SQL lives: every query and every job transition in db/, imports flowing one way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUERY_BUILDERS = {"select", "insert", "update", "delete", "text", "func", "tuple_", "and_", "or_", "case", "exists"}


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every `from module import name` and ("module", "") for `import module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def _session_sql_calls(path: Path) -> list[int]:
    """Lines calling `<something>.execute(...)` on a session (LISTEN on a raw psycopg connection aside)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("execute", "scalar", "scalars")
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "session"):
            lines.append(node.lineno)
    return lines


def test_the_application_and_the_catalog_build_no_queries_of_their_own():
    offenders = {}
    for path in sorted([*(ROOT / "serve_app").rglob("*.py"), *(ROOT / "catalog").rglob("*.py")]):
        builders = [name for module, name in _imports(path)
                    if module.split(".")[0] == "sqlalchemy" and name in QUERY_BUILDERS]
        calls = _session_sql_calls(path)
        if builders or calls:
            offenders[str(path.relative_to(ROOT))] = {"imports": builders, "session calls on lines": calls}
    assert offenders == {}


def test_db_imports_nothing_of_the_application():
    for path in sorted((ROOT / "db").rglob("*.py")):
        imported = {module.split(".")[0] for module, _ in _imports(path)}
        assert not imported & {"serve_app", "deployments", "catalog"}, path


FEATURES = ("catalog", "preview", "generation", "uploads", "health", "admin/auth", "admin/fabrics", "admin/generations",
            "admin/renders")


def test_every_route_lives_in_a_feature_slice_with_its_schemas_and_service():
    """A newcomer finds "where is cancel handled?" by the folder name: each feature holds its routes,
    its bodies and the code the routes call, and no module outside the slices declares a route."""
    for feature in FEATURES:
        folder = ROOT / "serve_app" / feature
        assert {"routes.py", "service.py"} <= {p.name for p in folder.glob("*.py")}, feature
    routes = {str(p.relative_to(ROOT)) for p in (ROOT / "serve_app").rglob("*.py")
              if "APIRouter(" in p.read_text()}
    assert routes == {f"serve_app/{feature}/routes.py" for feature in FEATURES}


def test_the_app_factory_only_assembles_routers():
    imported = {module for module, _ in _imports(ROOT / "serve_app" / "web.py")}
    assert not {m for m in imported if m.split(".")[0] in ("db", "catalog", "deployments")}
    assert not {m for m in imported if m.startswith("serve_app.") and m.endswith(".service")}


def test_routes_stay_thin_and_reach_the_database_only_through_db_functions():
    for path in (ROOT / "serve_app").rglob("routes.py"):
        imported = {module.split(".")[0] for module, _ in _imports(path)}
        assert "sqlalchemy" not in imported, path
