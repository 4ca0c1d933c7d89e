"""Clean seams: no import cycle between minigriffin's modules, no module reaching into another's private names.

The package is read, not imported: `ast` over every minigriffin/**/*.py, with the imports inside functions
counted like those at the top. A lazy import avoids a problem at import time, not for the reader: a module
that imports another inside a function still depends on it, and two modules that need each other are one
module in two files. So a function-level import that closes a cycle fails here too.

What counts as an edge A -> B: `import minigriffin.b`, `from minigriffin import b` (b a module) and
`from minigriffin.b import name`, anywhere in A. Two things are deliberately not edges:
  - the parent packages Python runs first (importing minigriffin.scan.numba_cpu executes minigriffin/__init__.py
    and minigriffin/scan/__init__.py): the reader sees the module named, and counting the packages would make
    every module depend on minigriffin/__init__.py and so on everything it re-exports;
  - modules loaded by name at run time (`importlib.import_module(path)` in the scan backend registry): a
    registry is a plug-in point, which is what it is for.

A private name is one with a single leading underscore (dunder names such as __version__ are public). Using
another module's private name, by `from minigriffin.x import _name` or by `x._name` on an imported minigriffin
module, fails: what another module needs is part of its interface and gets a public name.
"""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "minigriffin"


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_names(root, package):
    """{module name: file} for every .py file under root (root is the package folder named `package`)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _dotted(node):
    """['a', 'b', 'c'] for the expression a.b.c, else None."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(names)]


def scan_imports(root, package):
    """Read the package at `root`. Returns (edges, privates):
    edges: {(importer, imported): "file:line"} between the package's own modules;
    privates: ["file:line: importer uses module._name"] for every private cross-module use."""
    modules = _module_names(root, package)
    edges, privates = {}, []

    def longest_module(dotted):
        """The longest prefix of the dotted name that is one of the package's modules, and the rest."""
        for end in range(len(dotted), 0, -1):
            name = ".".join(dotted[:end])
            if name in modules:
                return name, dotted[end:]
        return None, dotted

    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        where = lambda node: f"{path.relative_to(root.parent)}:{node.lineno}"  # noqa: E731
        bound = {}                                   # local name -> module it names (for attribute access)

        def add_edge(target, node):
            if target is not None and target != importer:
                edges.setdefault((importer, target), where(node))

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] != package:
                        continue
                    target, _ = longest_module(alias.name.split("."))
                    add_edge(target, node)
                    if alias.asname:
                        bound[alias.asname] = target
                    else:                            # `import a.b.c` binds a
                        bound[package] = package
            elif isinstance(node, ast.ImportFrom):
                if node.level:                       # relative import: resolve against the importer's package
                    base = importer.split(".") if is_package else importer.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != package:
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:         # from minigriffin import fused: the module itself
                        add_edge(submodule, node)
                        bound[alias.asname or alias.name] = submodule
                        continue
                    target, _ = longest_module(source.split("."))
                    add_edge(target, node)
                    if _is_private(alias.name) and target != importer:
                        privates.append(f"{where(node)}: {importer} imports {source}.{alias.name}")
        for node in ast.walk(tree):                  # module._name on an imported package module
            if not isinstance(node, ast.Attribute):
                continue
            dotted = _dotted(node)
            if dotted is None or dotted[0] not in bound or bound[dotted[0]] is None:
                continue
            full = bound[dotted[0]].split(".") + dotted[1:]
            target, rest = longest_module(full)
            if target is not None and target != importer and len(rest) == 1 and _is_private(rest[0]):
                privates.append(f"{where(node)}: {importer} uses {target}.{rest[0]}")
    return edges, sorted(set(privates))


def find_cycles(edges):
    """The import cycles: for every strongly connected component of more than one module, shortest cycles
    through its modules until each module appears in one: [[a, b, ..., a], ...]."""
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def strongconnect(v):                            # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    def shortest_cycle(start, members):
        """Breadth-first from start, inside the component, back to start: [start, ..., start]."""
        parents, frontier = {start: None}, [start]
        while frontier:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        path = [v]
                        while parents[path[0]] is not None:
                            path.insert(0, parents[path[0]])
                        return path + [start]
                    if w not in parents:
                        parents[w] = v
                        nxt.append(w)
            frontier = nxt
        raise AssertionError(f"{start} is in a strongly connected component but on no cycle")

    cycles = []
    for component in components:                     # shortest cycles until every module of it is shown
        covered = set()
        for start in component:
            if start not in covered:
                cycle = shortest_cycle(start, set(component))
                cycles.append(cycle)
                covered.update(cycle)
    return cycles


def describe(cycles, edges):
    lines = []
    for cycle in cycles:
        lines.append(" -> ".join(cycle))
        lines += [f"    {a} -> {b}  ({edges[a, b]})" for a, b in zip(cycle, cycle[1:])]
    return "\n".join(lines)


def test_no_import_cycles():
    edges, _ = scan_imports(PACKAGE_ROOT, "minigriffin")
    cycles = find_cycles(edges)
    assert not cycles, "import cycles between minigriffin modules:\n" + describe(cycles, edges)


def test_no_private_cross_module_imports():
    _, privates = scan_imports(PACKAGE_ROOT, "minigriffin")
    assert not privates, "private names used across modules:\n" + "\n".join(privates)


# --- The checker itself can fail ------------------------------------------------------------------------------

def _write_package(root, files):
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_checker_finds_cycles_through_function_level_imports(tmp_path):
    root = _write_package(tmp_path, {
        "__init__.py": "from pkg.a import f\n",
        "a.py": "from pkg import b\n",
        "b.py": "def g():\n    from pkg.sub.c import h\n",
        "sub/__init__.py": "",
        "sub/c.py": "def h():\n    import pkg.a as a\n",
        "d.py": "import pkg.sub.c\n",                   # into the cycle, not part of it
    })
    edges, _ = scan_imports(root, "pkg")
    assert find_cycles(edges) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert ("pkg", "pkg.a") in edges and ("pkg.d", "pkg.sub.c") in edges
    assert ("pkg.sub.c", "pkg.sub") not in edges      # parent packages are not edges


def test_checker_finds_private_names_used_across_modules(tmp_path):
    root = _write_package(tmp_path, {
        "__init__.py": "__version__ = '1'\n",
        "a.py": "_SECRET = 1\nPUBLIC = 2\n",
        "b.py": ("from pkg.a import _SECRET, PUBLIC\n"
                 "def f():\n    from pkg import a\n    return a._SECRET + a.PUBLIC\n"),
        "c.py": "import pkg.a as mod\nimport pkg\nX = mod._SECRET + len(pkg.__version__)\nY = pkg.a._SECRET\n",
        "d.py": "from . import a\nfrom .a import _SECRET\n",
    })
    _, privates = scan_imports(root, "pkg")
    assert [p.split(": ", 1)[1] for p in privates] == [
        "pkg.b imports pkg.a._SECRET", "pkg.b uses pkg.a._SECRET",
        "pkg.c uses pkg.a._SECRET", "pkg.c uses pkg.a._SECRET",
        "pkg.d imports pkg.a._SECRET",
    ], privates


MAX_MODULE_LINES = 300      # issue 15: small files a learner can read in one sitting


def test_every_module_is_at_most_300_lines():
    long = {str(path.relative_to(PACKAGE_ROOT)): n for path in sorted(PACKAGE_ROOT.rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them along a natural seam): {long}"


def test_import_sets_a_passive_openmp_wait_policy_unless_the_user_set_one():
    """minigriffin/__init__.py: Numba's spinning OpenMP threads starve OpenBLAS's (docs/benchmarks.md), so the
    package defaults OMP_WAIT_POLICY to PASSIVE before any OpenMP runtime loads, and keeps a value already set."""
    import os
    import subprocess
    import sys
    show = "import minigriffin, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        run_env = env if given is None else dict(env, OMP_WAIT_POLICY=given)
        out = subprocess.run([sys.executable, "-c", show], env=run_env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected, (given, out.stdout, out.stderr)
