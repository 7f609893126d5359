"""Every script in examples/ runs end to end (tiny settings: LATENTGEO_EXAMPLE_QUICK=1) and exits 0.

The examples build their tiny random-init diffusers models into a temporary folder here
(LATENTGEO_EXAMPLE_MODELS), so the test never writes into the checkout. About 45 s in all on 2 CPU cores.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NEEDS_DIFFUSERS = {"fisher_curves_diffusers_unet", "diagnose_diffusers_vae", "geometry_diffusers_vae",
                   "geodesic_diffusers_unet", "sample_diffusers_unet"}
SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_every_example_is_listed_in_the_readme():
    readme = (EXAMPLES / "README.md").read_text()
    assert SCRIPTS and all(f"{s}.py" in readme for s in SCRIPTS)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("example-models")


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs(name, models):
    if name in NEEDS_DIFFUSERS and importlib.util.find_spec("diffusers") is None:
        pytest.skip("needs diffusers (pip install 'latentgeo[interop]')")
    script = EXAMPLES / f"{name}.py"
    doc = script.read_text().split('"""')[1]
    assert "How to run" in doc and f"examples/{name}.py" in doc and ("For a real" in doc), \
        f"{name}: the docstring must say what it shows, how to run it and what to change for a real model"
    env = {**os.environ, "LATENTGEO_EXAMPLE_QUICK": "1", "LATENTGEO_EXAMPLE_MODELS": str(models),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.stdout.strip(), f"{name} printed nothing"
