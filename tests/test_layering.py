"""The package's rooms and the one direction of their imports, checked on the source with ``ast``.

:func:`violations` reads every ``keras_stiffness/**.py`` and ``cli/**.py`` below a root (the folder
``cli/`` is installed as ``keras_stiffness.cli``) and lists, one string each with ``file:line``:

(a) ``layering``: an import of a room with a higher rank, or of another room with the same rank;
(b) ``third-party``: a NumPy-only module (``math/``, ``version``, ``validation``) importing anything but
    the standard library, NumPy and other NumPy-only modules; a ``store/`` module reaching TensorFlow or
    Keras, directly or through the package's own modules;
(c) ``cycle``: modules importing each other, with the cycle's path;
(d) ``underscore``: a module using an underscore name of another module (``from m import _x`` or
    ``m._x``); dunder names such as ``__version__`` are public.

Every ``import`` statement counts, at module level or inside a function: a lazy import still runs, just
later. Strings (``keras_stiffness.__init__``'s ``_LAZY`` table, ``importlib.import_module``) are not
imports. The tests at the bottom build small trees under ``tmp_path`` to show each check can fail.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import pathlib
import re
import sys
import textwrap
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pytest

# ------------------------------------------------------------------------------------------------
# The rank table. A module may import modules of its own room and of rooms with a lower rank only.
# ------------------------------------------------------------------------------------------------
PACKAGE = "keras_stiffness"
ROOMS: Dict[str, int] = {
    "keras_stiffness": 0,  # the top-level modules: __init__ (lazy API), version, validation, keras_compat
    "keras_stiffness.engine": 1,  # TensorFlow autodiff: per-layer Gram rules, capture, fallback
    "keras_stiffness.math": 1,  # NumPy only: stiffness, distances, summaries, the Measurement record
    "keras_stiffness.data": 2,  # sources, probe sets, tf.data input
    "keras_stiffness.store": 2,  # the HDF5 run files (no TensorFlow, no Keras)
    "keras_stiffness.measure": 3,  # adapters and measure()
    "keras_stiffness.callback": 4,  # the Keras callback
    "keras_stiffness.plots": 4,  # matplotlib figures
    "keras_stiffness.app": 5,  # training, analysis and reports behind the command line
    "keras_stiffness.cli": 6,  # the top-level folder cli/, installed as keras_stiffness.cli
}
# Modules (or whole rooms) that must stay NumPy-only: they may import the standard library, these
# third-party packages and each other, nothing else.
NUMPY_ONLY: Tuple[str, ...] = ("keras_stiffness.math", "keras_stiffness.version", "keras_stiffness.validation")
NUMPY_ONLY_THIRD_PARTY: Tuple[str, ...] = ("numpy",)
# Rooms that must never reach these packages, directly or through any module of the package.
FORBIDDEN: Dict[str, Tuple[str, ...]] = {
    "keras_stiffness.store": ("tensorflow", "keras", "tf_keras", "tensorflow_datasets"),
}
CLI_FOLDER = "cli"  # cli/x.py is the module keras_stiffness.cli.x

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# Reading the tree
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Import:
    target: str  # the absolute dotted name imported (a module of the package, or a third-party one)
    line: int
    private: Optional[str] = None  # the underscore name taken from target, if any


@dataclasses.dataclass
class Module:
    name: str
    path: pathlib.Path
    rel: str  # the path shown in messages, relative to the root
    is_package: bool
    imports: List[Import] = dataclasses.field(default_factory=list)


def _module_name(rel: pathlib.PurePosixPath) -> Tuple[str, bool]:
    parts = list(rel.with_suffix("").parts)
    if parts[0] == CLI_FOLDER:
        parts = [PACKAGE, "cli"] + parts[1:]
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def find_modules(root: pathlib.Path) -> Dict[str, Module]:
    """``{dotted name: Module}`` for ``keras_stiffness/**.py`` and ``cli/**.py`` below ``root``."""
    modules = {}
    for folder in (PACKAGE, CLI_FOLDER):
        for path in sorted((root / folder).rglob("*.py")):
            rel = pathlib.PurePosixPath(path.relative_to(root).as_posix())
            name, is_package = _module_name(rel)
            modules[name] = Module(name, path, str(rel), is_package)
    return modules


def _resolve_from(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, modules: Dict[str, Module]) -> str:
    """The longest prefix of ``name`` that is a module of the tree (``name`` itself when none is)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return name


def _ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _read_imports(module: Module, modules: Dict[str, Module]) -> None:
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
    aliases: Dict[str, str] = {}  # local name -> a module of the package it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules) if _ours(alias.name) else alias.name
                module.imports.append(Import(target, node.lineno))
                if alias.asname and alias.name in modules:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, node)
            if not _ours(source):
                module.imports.append(Import(source, node.lineno))
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:  # `from package import module`
                    module.imports.append(Import(submodule, node.lineno))
                    aliases[alias.asname or alias.name] = submodule
                else:
                    module.imports.append(Import(_known(source, modules), node.lineno))
                    if _is_private(alias.name):  # the line of the name itself in a parenthesized list
                        line = getattr(alias, "lineno", node.lineno)
                        module.imports.append(Import(_known(source, modules), line, alias.name))
    # `m._name` where m is a module of the package: bound by an alias, or spelled out in full.
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = _dotted(node.value)
            owner = aliases.get(owner, owner) if owner else None
            if owner in modules:
                module.imports.append(Import(owner, node.lineno, node.attr))


def _dotted(node: ast.AST) -> Optional[str]:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def room_of(name: str, modules: Dict[str, Module]) -> Optional[str]:
    """The room of a module of the package, or None for a module in a subpackage the table misses."""
    if name in ROOMS:
        return name
    parent = name.rsplit(".", 1)[0]
    if parent == PACKAGE:  # a top-level module (keras_stiffness.x), unless x is a subpackage
        return None if name in modules and modules[name].is_package else PACKAGE
    best = max((room for room in ROOMS if room != PACKAGE and name.startswith(room + ".")), key=len, default=None)
    return best


def _in(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# ------------------------------------------------------------------------------------------------
# The checks
# ------------------------------------------------------------------------------------------------
def violations(root) -> List[str]:
    """Every layering, third-party, cycle and underscore violation below ``root``, one string each."""
    root = pathlib.Path(root)
    modules = find_modules(root)
    for module in modules.values():
        _read_imports(module, modules)
    out: List[str] = []
    for module in modules.values():
        out += _check_rooms(module, modules)
        out += _check_third_party(module)
        out += _check_underscore(module)
    out += _check_forbidden_reach(modules)
    out += _check_cycles(modules)
    return out


def _internal(module: Module, modules: Dict[str, Module]) -> Iterable[Import]:
    for imp in module.imports:
        if _ours(imp.target) and imp.target != module.name and imp.private is None:
            yield imp


def _check_rooms(module: Module, modules: Dict[str, Module]) -> List[str]:
    room = room_of(module.name, modules)
    if room is None:
        return [f"{module.rel}:1: layering: {module.name} is in no room; add its subpackage to ROOMS"]
    out = []
    for imp in _internal(module, modules):
        other = room_of(imp.target, modules)
        if other is None or other == room or other == PACKAGE and imp.target == PACKAGE:
            continue  # an unknown room is reported at its own module; `import keras_stiffness` is rank 0
        if ROOMS[other] > ROOMS[room] or (ROOMS[other] == ROOMS[room] and other != room):
            out.append(
                f"{module.rel}:{imp.line}: layering: {module.name} ({room}, rank {ROOMS[room]}) imports "
                f"{imp.target} ({other}, rank {ROOMS[other]})"
            )
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def _check_third_party(module: Module) -> List[str]:
    if not _in(module.name, NUMPY_ONLY):
        return []
    out = []
    for imp in module.imports:
        if _ours(imp.target):
            ok = _in(imp.target, NUMPY_ONLY)
        else:
            ok = _top(imp.target) in sys.stdlib_module_names or _top(imp.target) in NUMPY_ONLY_THIRD_PARTY
        if not ok:
            out.append(f"{module.rel}:{imp.line}: third-party: {module.name} is NumPy-only but imports {imp.target}")
    return out


def _check_forbidden_reach(modules: Dict[str, Module]) -> List[str]:
    out = []
    for module in modules.values():
        banned = next((FORBIDDEN[room] for room in FORBIDDEN if _in(module.name, [room])), None)
        if not banned:
            continue
        # Breadth-first through the package's own modules, remembering how each was reached.
        first_step: Dict[str, Tuple[int, List[str]]] = {module.name: (0, [module.name])}
        queue = collections.deque([module.name])
        while queue:
            current = queue.popleft()
            line, chain = first_step[current]
            for imp in modules[current].imports if current in modules else ():
                if _top(imp.target) in banned:
                    via = "" if current == module.name else " via " + " -> ".join(chain + [imp.target])
                    out.append(
                        f"{module.rel}:{line or imp.line}: third-party: {module.name} must not import "
                        f"{_top(imp.target)} but reaches {imp.target}{via}"
                    )
                    queue.clear()
                    break
                if _ours(imp.target) and imp.target not in first_step:
                    first_step[imp.target] = (line or imp.line, chain + [imp.target])
                    queue.append(imp.target)
    return out


def _check_underscore(module: Module) -> List[str]:
    return [
        f"{module.rel}:{imp.line}: underscore: {module.name} uses {imp.private} of {imp.target}"
        for imp in module.imports
        if imp.private is not None and imp.target != module.name
    ]


def _check_cycles(modules: Dict[str, Module]) -> List[str]:
    edges: Dict[str, Dict[str, int]] = {name: {} for name in modules}
    for module in modules.values():
        for imp in _internal(module, modules):
            if imp.target in modules:
                edges[module.name].setdefault(imp.target, imp.line)
    out = []
    for component in _strongly_connected(edges):
        if len(component) < 2:
            continue
        start = min(component)
        path = _shortest_cycle(start, edges, set(component))
        steps = ", ".join(f"{modules[a].rel}:{edges[a][b]} imports {b}" for a, b in zip(path, path[1:]))
        members = "" if len(component) == len(path) - 1 else f" (all of {sorted(component)} import each other)"
        out.append(f"{modules[start].rel}:{edges[start][path[1]]}: cycle: {' -> '.join(path)} [{steps}]{members}")
    return out


def _strongly_connected(edges: Dict[str, Dict[str, int]]) -> List[List[str]]:
    """Tarjan's algorithm, iterative."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    components: List[List[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_cycle(start: str, edges: Dict[str, Dict[str, int]], within: Set[str]) -> List[str]:
    previous = {start: None}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(edges[node]):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return list(reversed(path)) + [start]
            if child in within and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")  # pragma: no cover - a component of 2+ always has one


# ------------------------------------------------------------------------------------------------
# The real tree
# ------------------------------------------------------------------------------------------------
def test_the_package_follows_its_layering():
    found = violations(ROOT)
    assert not found, f"{len(found)} layering violation(s):\n" + "\n".join(found)


def test_the_checker_reads_the_real_tree():
    modules = find_modules(ROOT)
    assert "keras_stiffness.cli.main" in modules and "keras_stiffness.engine.rules.base" in modules
    subpackages = {name for name, m in modules.items() if m.is_package and name.count(".") == 1}
    assert subpackages == set(ROOMS) - {PACKAGE}, "every subpackage needs a rank in ROOMS, and no more"
    # Every line that starts an import of the package, at any depth, is seen as an import at that line.
    for module in modules.values():
        _read_imports(module, modules)
        seen = {imp.line for imp in module.imports}
        lines = module.path.read_text(encoding="utf-8").splitlines()
        starts = [n for n, line in enumerate(lines, 1) if re.match(r"\s*(from|import) keras_stiffness\b", line)]
        assert set(starts) <= seen, (module.rel, sorted(set(starts) - seen))


# ------------------------------------------------------------------------------------------------
# The checker can fail: small trees that break one rule each
# ------------------------------------------------------------------------------------------------
def make_tree(root: pathlib.Path, files: Dict[str, str]) -> pathlib.Path:
    """Write ``files`` (path -> source) below ``root``, with the package's ``__init__.py`` files."""
    packages = {"keras_stiffness/__init__.py", "cli/__init__.py"}
    packages |= {f"keras_stiffness/{room.split('.')[1]}/__init__.py" for room in ROOMS if room.count(".") == 1}
    packages.discard("keras_stiffness/cli/__init__.py")
    for rel in sorted(packages):
        files.setdefault(rel, '"""A package."""\n')
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root


def only(found: List[str], kind: str) -> List[str]:
    return [v for v in found if f": {kind}: " in v]


def test_a_clean_tree_has_no_violations(tmp_path):
    files = {
        "keras_stiffness/__init__.py": (
            '_LAZY = {"f": "keras_stiffness.app.train"}\nfrom keras_stiffness.version import __version__\n'
        ),
        "keras_stiffness/version.py": "import sys\n__version__ = '1'\n",
        "keras_stiffness/validation.py": "import numpy as np\n",  # appears later: rank 0 like version
        "keras_stiffness/keras_compat.py": "import keras\n",
        "keras_stiffness/math/record.py": "import dataclasses\nimport numpy as np\nfrom ..validation import check\n",
        "keras_stiffness/math/stiffness.py": "from keras_stiffness.version import __version__\nfrom . import record\n",
        "keras_stiffness/engine/api.py": (
            "def f():\n    import tensorflow as tf\n    from keras_stiffness.keras_compat import k\n"
        ),
        "keras_stiffness/store/writer.py": (
            "import h5py\nfrom keras_stiffness import __version__, version\nfrom ..math.record import M\n"
        ),
        "keras_stiffness/measure/adapters.py": "from keras_stiffness.engine import api\nfrom ..store import writer\n",
        "keras_stiffness/app/train.py": "from keras_stiffness.measure.adapters import KerasAdapter as _Adapter\n",
        "cli/main.py": "from keras_stiffness.app import train\nfrom keras_stiffness.cli.options import o\n",
        "cli/options.py": "import click\n",
    }
    assert violations(make_tree(tmp_path, files)) == []


def test_a_lower_room_importing_a_higher_one_is_reported(tmp_path):
    files = {
        "keras_stiffness/engine/api.py": "def f():\n    from keras_stiffness.app.train import g  # lazy counts\n",
        "keras_stiffness/math/stiffness.py": "from ..engine import api\n",  # same rank, other room
        "keras_stiffness/store/reader.py": "import keras_stiffness.data.probes\n",
        "keras_stiffness/data/probes.py": "x = 1\n",
        "keras_stiffness/version.py": "from keras_stiffness.cli import main\n",
        "keras_stiffness/app/train.py": "from keras_stiffness.plots import common\n",  # fine: lower
        "keras_stiffness/plots/common.py": "",
        "cli/main.py": "",
    }
    found = only(violations(make_tree(tmp_path, files)), "layering")
    assert [v.split(": layering")[0] for v in found] == [
        "keras_stiffness/engine/api.py:2",
        "keras_stiffness/math/stiffness.py:1",
        "keras_stiffness/store/reader.py:1",
        "keras_stiffness/version.py:1",
    ], found
    expected = "keras_stiffness.engine.api (keras_stiffness.engine, rank 1) imports keras_stiffness.app.train"
    assert expected in found[0]


def test_a_subpackage_missing_from_the_table_is_reported(tmp_path):
    files = {"keras_stiffness/extras/__init__.py": "", "keras_stiffness/extras/thing.py": ""}
    assert violations(make_tree(tmp_path, files)) == [
        "keras_stiffness/extras/__init__.py:1: layering: keras_stiffness.extras is in no room; "
        "add its subpackage to ROOMS",
        "keras_stiffness/extras/thing.py:1: layering: keras_stiffness.extras.thing is in no room; "
        "add its subpackage to ROOMS",
    ]


def test_heavy_imports_in_numpy_only_and_store_modules_are_reported(tmp_path):
    files = {
        "keras_stiffness/math/stiffness.py": "import numpy\ndef f():\n    import tensorflow as tf\n",
        "keras_stiffness/math/distance.py": "from keras_stiffness.keras_compat import k\nimport h5py.h5f\n",
        "keras_stiffness/keras_compat.py": "import keras\n",
        "keras_stiffness/validation.py": "import matplotlib\n",
        "keras_stiffness/store/writer.py": "def f():\n    from keras import ops\n",
        "keras_stiffness/store/reader.py": "import h5py\nfrom keras_stiffness.engine import api\n",  # via engine
        "keras_stiffness/engine/api.py": "import numpy\nfrom keras_stiffness.engine.losses import x\n",
        "keras_stiffness/engine/losses.py": "import tensorflow as tf\n",
    }
    found = only(violations(make_tree(tmp_path, files)), "third-party")
    assert found == [
        "keras_stiffness/math/distance.py:1: third-party: keras_stiffness.math.distance is NumPy-only but imports "
        "keras_stiffness.keras_compat",
        "keras_stiffness/math/distance.py:2: third-party: keras_stiffness.math.distance is NumPy-only but imports "
        "h5py.h5f",
        "keras_stiffness/math/stiffness.py:3: third-party: keras_stiffness.math.stiffness is NumPy-only but imports "
        "tensorflow",
        "keras_stiffness/validation.py:1: third-party: keras_stiffness.validation is NumPy-only but imports matplotlib",
        "keras_stiffness/store/reader.py:2: third-party: keras_stiffness.store.reader must not import tensorflow but "
        "reaches tensorflow via keras_stiffness.store.reader -> keras_stiffness.engine.api -> "
        "keras_stiffness.engine.losses -> tensorflow",
        "keras_stiffness/store/writer.py:2: third-party: keras_stiffness.store.writer must not import keras but "
        "reaches keras",
    ], found


def test_an_import_cycle_is_reported_with_its_path(tmp_path):
    files = {
        "keras_stiffness/data/sources.py": "from keras_stiffness.data.probes import ProbeSet\n",
        "keras_stiffness/data/probes.py": "import numpy\n\ndef f():\n    from .sources import load  # lazy\n",
        "keras_stiffness/data/tfds.py": "from keras_stiffness.data import sources\n",  # on no cycle
    }
    assert only(violations(make_tree(tmp_path, files)), "cycle") == [
        "keras_stiffness/data/probes.py:4: cycle: keras_stiffness.data.probes -> keras_stiffness.data.sources -> "
        "keras_stiffness.data.probes [keras_stiffness/data/probes.py:4 imports keras_stiffness.data.sources, "
        "keras_stiffness/data/sources.py:1 imports keras_stiffness.data.probes]"
    ]


def test_a_longer_cycle_is_reported_once(tmp_path):
    files = {
        "keras_stiffness/engine/a.py": "import keras_stiffness.engine.b\n",
        "keras_stiffness/engine/b.py": "from keras_stiffness.engine.rules import c\n",
        "keras_stiffness/engine/rules/__init__.py": "",
        "keras_stiffness/engine/rules/c.py": "def f():\n    import keras_stiffness.engine.a as a\n",
    }
    cycles = only(violations(make_tree(tmp_path, files)), "cycle")
    path = "keras_stiffness.engine.a -> keras_stiffness.engine.b -> keras_stiffness.engine.rules.c -> "
    assert len(cycles) == 1 and path + "keras_stiffness.engine.a [" in cycles[0], cycles


def test_underscore_names_of_other_modules_are_reported(tmp_path):
    files = {
        "keras_stiffness/data/sources.py": "def _check_seed(s):\n    return _check_seed(s)\n__all__ = []\n",
        "keras_stiffness/data/probes.py": (
            "from keras_stiffness.data.sources import _check_seed, __all__\n"
            "from keras_stiffness.data import sources\n"
            "import keras_stiffness.data.sources as src\n"
            "import keras_stiffness.data.sources\n"
            "sources._hidden(src._other, keras_stiffness.data.sources._third, sources.__name__)\n"
        ),
        "keras_stiffness/version.py": "__version__ = '1'\n",
        "keras_stiffness/store/files.py": "from keras_stiffness.version import __version__\n",
    }
    found = violations(make_tree(tmp_path, files))
    uses = "underscore: keras_stiffness.data.probes uses"
    assert sorted(only(found, "underscore")) == [
        f"keras_stiffness/data/probes.py:1: {uses} _check_seed of keras_stiffness.data.sources",
        f"keras_stiffness/data/probes.py:5: {uses} _hidden of keras_stiffness.data.sources",
        f"keras_stiffness/data/probes.py:5: {uses} _other of keras_stiffness.data.sources",
        f"keras_stiffness/data/probes.py:5: {uses} _third of keras_stiffness.data.sources",
    ], found
    assert only(found, "cycle") == []


@pytest.mark.parametrize(
    "rel, name",
    [
        ("cli/main.py", "keras_stiffness.cli.main"),
        ("cli/__init__.py", "keras_stiffness.cli"),
        ("keras_stiffness/__init__.py", "keras_stiffness"),
        ("keras_stiffness/engine/rules/base.py", "keras_stiffness.engine.rules.base"),
    ],
)
def test_module_names(rel, name):
    assert _module_name(pathlib.PurePosixPath(rel))[0] == name
