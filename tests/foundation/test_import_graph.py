"""The loading chain flows one way: no import cycle among maxcli's modules, function-level imports and
literal `importlib.import_module("maxcli...")` calls counted (only `if TYPE_CHECKING:` blocks are not),
and no module outside an architecture's folder names that architecture."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"maxcli": REPO / "maxcli", "maxcli.kernels": REPO / "kernels"}  # kernels/ ships as maxcli.kernels


def _modules() -> dict[str, Path]:
    mods = {}
    for package, root in PACKAGES.items():
        for p in root.rglob("*.py"):
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = p
    return mods


def _known(name: str, mods: dict[str, Path]) -> str | None:
    """The longest module prefix of a dotted name (`pkg.mod.attr` -> `pkg.mod`)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):  # typing-only imports do not run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names = [arg.value]
            elif isinstance(arg, ast.JoinedStr):  # f"maxcli.x.{...}": the constant prefix's package
                head = arg.values[0]
                if isinstance(head, ast.Constant):
                    names = [str(head.value).rstrip(".")]
        for n in names:
            if n.startswith("maxcli") and (target := _known(n, mods)) and target != module:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_detector_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_maxcli_modules() -> None:
    graph = _graph()
    assert len(graph) > 100 and graph["maxcli.pipelines.lib.registry"]  # the walk saw the package
    cycles = _cycles(graph)
    detail = "; ".join(" -> ".join(c) for c in cycles)
    assert not cycles, f"import cycles: {detail}"


def test_loader_does_not_import_back_up_the_chain() -> None:
    """config -> registry -> loader/builder (factory) -> pipeline -> engine: the lower end never imports
    the upper one, and nothing but an entry point imports the entry points."""
    graph = _graph()
    upstream = {
        "maxcli.pipelines.lib.factory": {"maxcli.pipelines.lib.registry", "maxcli.pipelines.lib.custom",
                                         "maxcli.pipelines.lib.entrypoints", "maxcli.pipelines.lib.hf_engine",
                                         "maxcli.distributed.launch"},
        "maxcli.pipelines.lib.text_generation": {"maxcli.pipelines.lib.factory", "maxcli.pipelines.lib.registry"},
        "maxcli.pipelines.lib.pipeline_model": {"maxcli.pipelines.lib.factory", "maxcli.pipelines.lib.registry"},
        "maxcli.engine.engine": {"maxcli.pipelines.lib.factory", "maxcli.pipelines.lib.registry",
                                 "maxcli.pipelines.lib.entrypoints"},
        "maxcli.pipelines.lib.registry": {"maxcli.pipelines.lib.custom", "maxcli.pipelines.lib.entrypoints"},
    }
    for module, banned in upstream.items():
        assert not graph[module] & banned, f"{module} imports {sorted(graph[module] & banned)}"


def test_only_an_architecture_folder_names_its_architecture() -> None:
    """The registry finds architecture packages through maxcli.plugins (the folders under
    maxcli/architectures/, then entry points); no other module imports them, so adding one touches only
    its folder."""
    graph = _graph()
    for module, targets in graph.items():
        if module.startswith("maxcli.architectures"):
            continue
        named = sorted(t for t in targets if t.startswith("maxcli.architectures."))
        assert not named, f"{module} imports {named}"
