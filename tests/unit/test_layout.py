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
            "admin/renders", "admin/webhooks")


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


def _serve_app_graph() -> dict[str, set[str]]:
    """serve_app's modules and the serve_app modules each imports (lazy imports included: they are
    dependencies too), by dotted name; `from serve_app.x import y` counts `serve_app.x.y` when y is a module."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "serve_app").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, imported in _imports(path):
            if module.split(".")[0] != "serve_app":
                continue
            targets.add(f"{module}.{imported}" if f"{module}.{imported}" in modules else module)
        graph[name] = targets & modules.keys() - {name}
    return graph


def test_serve_app_has_no_import_circle():
    graph = _serve_app_graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan: every strongly connected component of more than one module
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


SLICES = tuple(f"serve_app.{feature.replace('/', '.')}" for feature in FEATURES)
ASSEMBLY = ("serve_app.app", "serve_app.ingress", "serve_app.web", "serve_app.cli", "serve_app.launcher")


def test_imports_flow_down_from_the_assembly_to_the_slices_to_the_queue_and_edge():
    """The app and its Serve wrappers assemble the slices; the slices use the queue side, the edge and
    the shared modules; the queue side and the edge know nothing of the slices or of the assembly."""
    def under(module: str, prefixes: tuple[str, ...]) -> bool:
        return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)

    upward = {}
    for module, targets in _serve_app_graph().items():
        if under(module, ("serve_app.jobqueue", "serve_app.edge")):
            forbidden = SLICES + ASSEMBLY + ("serve_app.deps",)
        elif under(module, SLICES):
            forbidden = ASSEMBLY + ("serve_app.jobqueue.job_runner",)
        else:
            continue
        if bad := sorted(t for t in targets if under(t, forbidden)):
            upward[module] = bad
    assert upward == {}


def test_names_say_one_thing():
    """One `deployments` (the model side's package), one `render_cache.py`, and each Serve deployment's
    class named as the deployment is (the name ops scale and read in the dashboard)."""
    assert not (ROOT / "serve_app" / "deployments.py").exists()
    assert [str(p.relative_to(ROOT)) for p in ROOT.rglob("render_cache.py")
            if ".venv" not in p.parts] == ["serve_app/jobqueue/render_cache.py"]
    declared = {}
    for path in [*(ROOT / "serve_app").rglob("*.py"), *(ROOT / "deployments").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ClassDef):
                for decorator in node.decorator_list:
                    call = decorator if isinstance(decorator, ast.Call) else None
                    target = call.func if call else decorator
                    if isinstance(target, ast.Attribute) and target.attr == "deployment":
                        names = [k.value.value for k in (call.keywords if call else []) if k.arg == "name"]
                        declared[node.name] = names[0] if names else node.name
    assert declared == {name: name for name in ("Ingress", "JobRunner", "ControlNetPreprocessor",
                                                "SdxlTurboGenerator", "Finisher")}
