"""The package's shape: each stage imports only what lies below it, and nothing imports in a circle."""

import ast
import os

from clitools import REPO

PACKAGE = os.path.join(REPO, "filter", "pipeshell_filter")

# Lowest first: a module may import from its own layer's module and from lower layers only.
LAYERS = [
    ("values", "yamlfile", "dirwalk", "startup"),
    ("sigma", "events"),  # the rule language; events as collectors write them (neither imports the other)
    ("detect", "coverage"),  # coverage: which fields the routed rules need that events carry (--field-coverage)
    ("correlate",),
    ("records",),
    ("engine",),
    ("io",),
    ("explain", "regress"),  # regress: pipeshell-filter test, the rules' regression cases (neither imports the other)
    ("supervise",),  # pipeshell-filter run: imported by cli, imports nothing of the package
    ("cli",),
    ("launch",),
    ("__main__",),
]


def _unit(module: str) -> str:
    """The layer unit of a dotted module name inside the package (``sigma.rule`` -> ``sigma``)."""
    return module.split(".")[0]


def _layer(unit: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit in units)


def _imports():
    """(importing module, imported module) pairs inside the package, from the source."""
    pairs = []
    for root, _, names in os.walk(PACKAGE):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            module = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            package = module.split(".")[:-1] if not path.endswith("__init__.py") else module.split(".")
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.ImportFrom) and node.level:
                    base = package[:len(package) - node.level + 1] if node.level > 1 else package
                    target = ".".join(base + ([node.module] if node.module else []))
                    if node.module is None:  # from . import x
                        pairs += [(module, ".".join(base + [alias.name])) for alias in node.names]
                    else:
                        pairs.append((module, target))
    return pairs


def test_every_module_is_in_a_layer():
    units = {_unit(m) for pair in _imports() for m in pair}
    assert units <= {u for layer in LAYERS for u in layer}, units


def test_each_stage_imports_only_what_lies_below_it():
    wrong = [(a, b) for a, b in _imports()
             if _unit(a) != _unit(b) and _layer(_unit(b)) >= _layer(_unit(a))]
    assert not wrong, wrong


def test_no_import_cycles():
    graph = {}
    for a, b in _imports():
        graph.setdefault(a, set()).add(b)

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, cycles


def test_explain_reads_only_the_public_surface_of_what_it_explains():
    """``explain`` read the correlator's private ``_seq``: a rename there would break explain --events
    at run time only.  Its own attributes aside (``self._x``), it reads what the stages publish."""
    tree = ast.parse(open(os.path.join(PACKAGE, "explain.py"), encoding="utf-8").read())
    private = sorted({(node.lineno, ast.unparse(node)) for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                      and not node.attr.startswith("__")
                      and not (isinstance(node.value, ast.Name) and node.value.id == "self")})
    assert not private, private


def test_every_python_line_is_at_most_120_characters():
    """The house style, held by a test rather than by memory: five lines had drifted past it."""
    long = []
    for folder in ("filter", "tests", "bench", "examples", "integrations"):
        for root, folders, names in os.walk(os.path.join(REPO, folder)):
            folders[:] = [name for name in folders if name != "out" and not name.startswith(".")]  # bench/out: runs'
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    with open(path, encoding="utf-8") as handle:
                        long += [f"{os.path.relpath(path, REPO)}:{number}" for number, line in enumerate(handle, 1)
                                 if len(line.rstrip("\n")) > 120]
    assert not long, long


def test_the_command_line_loads_no_openssl():
    """``hashlib`` loads OpenSSL (3 MB of peak RSS on every run): the digests use CPython's own BLAKE2
    (``detect.blake2b``); a module of this session imported hashlib and the bench saw 3 MB more."""
    import subprocess
    import sys

    found = subprocess.run([sys.executable, "-c", "import sys, pipeshell_filter.cli, pipeshell_filter.launch; "
                            "print(sorted({'_hashlib', '_ssl'} & set(sys.modules)))"],
                           capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stdout
