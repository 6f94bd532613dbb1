"""The layout's rules, read from the source (no import runs): no import cycles anywhere in
pycore/ and site/, no `_private` name imported across modules, and the browser-side
modules import no numpy at module level."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules():
    """{module name: path} for pycore/ (dotted names) and site/ (file stems)."""
    mods = {}
    for folder, _dirs, files in os.walk(os.path.join(ROOT, "pycore")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                mods[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    for f in os.listdir(os.path.join(ROOT, "site")):
        if f.endswith(".py"):
            mods[f[:-3]] = os.path.join(ROOT, "site", f)
    return mods


MODULES = _modules()


def _imports(name, path):
    """(imported module, imported names or None, line) for every import statement of a
    module, relative imports resolved."""
    is_pkg = path.endswith("__init__.py")
    package = name if is_pkg else name.rpartition(".")[0]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target, [a.name for a in node.names], node.lineno


def _graph():
    """Module -> set of project modules it imports (`from P import m` counts as an edge
    to P.m where that is a module, else to P)."""
    graph = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, names, _line in _imports(name, path):
            if names is not None and all(f"{target}.{n}" in MODULES for n in names):
                graph[name].update(f"{target}.{n}" for n in names)
            elif target in MODULES:
                graph[name].add(target)
    return graph


def test_the_graph_sees_the_project():
    """The reader finds the package and its known edges (so the cycle test below is not
    vacuous)."""
    g = _graph()
    assert len(MODULES) > 60
    assert "pycore.gpu.runtime" in g["pycore.ops.matmul"]
    assert "pycore.demix.base" in g["pycore.demix.spleeter"]
    assert "pycore.tone.controls" in g["pycore.tone.stream"]


def _cycle(graph):
    """One cycle as a list of modules, or None (iterative depth-first search)."""
    state = {}
    for start in graph:
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        state[start], path = 1, [start]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_private_names_across_modules():
    offenders = []
    for name, path in MODULES.items():
        for target, names, line in _imports(name, path):
            if target in MODULES and names:
                offenders += [f"{path}:{line} imports {n} from {target}" for n in names
                              if n.startswith("_") and not n.startswith("__")]
    assert not offenders, "\n".join(offenders)


BROWSER_MODULES = ["pycore.gpu.runtime", "pycore.gpu.browser", "pycore.gpu.selfcheck", "pycore.audio.buffers",
                   "pycore.audio.wav", "pycore.demix", "pycore.demix.base", "pycore.demix.spleeter",
                   "pycore.demix.htdemucs", "pycore.demix.umx", "pycore.tone", "pycore.tone.controls",
                   "pycore.tone.stream", "pycore.tone.features", "pycore.tone.calibration",
                   "pycore.weights.safetensors",
                   "pycore.weights.checkpoint"]


@pytest.mark.parametrize("module", BROWSER_MODULES)
def test_browser_modules_import_no_numpy_at_module_level(module):
    """What the pages load must import without numpy (Pyodide 314 has none)."""
    tree = ast.parse(open(MODULES[module], encoding="utf-8").read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
    assert not [n for n in names if n.split(".")[0] in ("numpy", "soundfile", "torch")]
