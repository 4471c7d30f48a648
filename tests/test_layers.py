"""dhf's modules import only downwards, in the layers the README's "Layout" lists
(function-level imports included): no cycles, and the numerical core knows nothing of
models, MPI jobs or files of a run."""
import ast
from pathlib import Path

DHF = Path(__file__).resolve().parents[1] / "dhf"

#: The README's layers, lowest first; a module may import from its own layer and below.
LAYERS = [
    {"errors", "launcher", "activations", "losses", "cg", "damping", "linesearch",
     "reduction", "reduction_jax", "layout", "schema", "data", "dataset", "checkpoint",
     "comm", "allreduce", "log", "plot", "static_shapes", "device", "preconditioner",
     "heap", "batches"},
    {"model"},
    {"curvature"},
    {"nets", "worker"},
    {"optimizer", "coordinator", "sgd"},
    {"tasks", "config", "sources", "rundir", "backends", "compiling", "optimizers", "run",
     "export", "memory"},
    {"api", "cli"},
]
LAYER = {name: k for k, names in enumerate(LAYERS) for name in names}


def imports(path: Path):
    """``(line, dhf module)`` of every import of a dhf module in ``path``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "dhf" or node.module.startswith("dhf.")):
            names = ([a.name for a in node.names] if node.module == "dhf"
                     else [node.module.split(".")[1]])
            yield from ((node.lineno, n) for n in names)
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name.split(".")[1]) for a in node.names
                        if a.name.startswith("dhf."))


def test_every_module_has_a_layer():
    modules = {p.relative_to(DHF).parts[0].removesuffix(".py") for p in DHF.glob("*")
               if p.suffix == ".py" or (p / "__init__.py").exists()} - {"__init__"}
    assert modules == set(LAYER)


def test_imports_go_down_the_layers_only():
    upward = []
    for path in DHF.rglob("*.py"):
        me = path.relative_to(DHF).parts[0].removesuffix(".py")
        if me == "__init__":
            continue  # dhf/__init__.py re-exports lazily
        for line, other in imports(path):
            if other != me and LAYER[other] > LAYER[me]:
                upward.append(f"{path.relative_to(DHF.parent)}:{line} imports dhf.{other}")
    assert not upward, upward
