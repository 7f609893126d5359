"""Layers never import upward: foundation < models < geometry < product (read from the source with ast, so lazy
imports inside functions count too)."""
import ast
from pathlib import Path

import latentgeo

ROOT = Path(latentgeo.__file__).parent
LAYER = {
    # foundation
    "errors": 0, "checkpoint": 0, "runfolder": 0, "threads": 0, "autodiff": 0, "data": 0, "_version": 0,
    # models
    "nets": 1, "train": 1, "diffusion": 1, "flows": 1, "autoencoders": 1, "resolve": 1,
    # geometry
    "fisher": 2, "spacetime": 2, "molecules": 2, "metrics": 2,
    # product
    "report": 3, "demo": 3, "cli": 3, "__main__": 3,
}
# Inside the models layer the training loop sits below what it trains.
BELOW = {"train": {"diffusion", "flows", "autoencoders", "resolve"}, "nets": {"train", "diffusion", "flows",
                                                                           "autoencoders", "resolve"}}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "latentgeo":
                yield from (f"latentgeo.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_every_package_is_assigned_a_layer():
    tops = {p.name.removesuffix(".py") for p in ROOT.iterdir()
            if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.name != "__init__.py"}
    assert tops <= set(LAYER), f"assign a layer to {sorted(tops - set(LAYER))}"


def test_no_upward_imports():
    bad = []
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT).parts
        if rel == ("__init__.py",):  # the package root is the public API: a lazy table over every layer
            continue
        me = rel[0].removesuffix(".py")
        for name in _imports(f):
            parts = name.split(".")
            if parts[0] != "latentgeo" or len(parts) < 2:
                continue
            other = parts[1]
            if other == me:
                continue
            if LAYER[other] > LAYER[me] or other in BELOW.get(me, ()):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))
