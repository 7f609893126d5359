"""Loading a file never runs code: forged checkpoints, edited configs and foreign class names are refused with one
line and no side effect; no loader hands a string read from a file to importlib, __import__ or getattr."""
import builtins
import importlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import latentgeo
from latentgeo.checkpoint import load, load_state, save, save_state
from latentgeo.diffusion import EDMDenoiser
from latentgeo.errors import LatentgeoError
from latentgeo.flows import FlowModel


def _forge(src, dst, edit):
    """Copy checkpoint ``src`` to ``dst`` with its latentgeo metadata passed through ``edit(meta) -> meta``."""
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["latentgeo"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(dst), metadata={"latentgeo": json.dumps(edit(meta))})
    return dst


@pytest.fixture
def denoiser_file(tmp_path):
    den = EDMDenoiser("mlp", sigma_data=0.5, net_kwargs={"in_dim": 2, "hidden": 8, "depth": 1})
    return save(den, tmp_path / "den.safetensors")


@pytest.fixture
def flow_file(tmp_path):
    flow = FlowModel("mlp", {"in_dim": 2, "hidden": 8, "depth": 1})
    return save(flow, tmp_path / "flow.safetensors")


def _shell_payloads(marker):
    return [
        ("os.system", {"command": f"touch {marker}"}),
        ("subprocess.Popen", {"args": ["touch", str(marker)]}),
        ("posix.system", {"command": f"touch {marker}"}),
        ("builtins.exec", {"source": f"open({str(marker)!r}, 'w')"}),
    ]


@pytest.mark.parametrize("which", ["denoiser", "flow"])
def test_dotted_net_in_metadata_is_refused_without_running(tmp_path, denoiser_file, flow_file, which):
    src = denoiser_file if which == "denoiser" else flow_file
    marker = tmp_path / "PWNED"
    for net, kwargs in _shell_payloads(marker):
        def edit(meta):
            meta["config"]["net"] = net
            meta["config"]["net_kwargs"] = kwargs
            return meta

        bad = _forge(src, tmp_path / f"bad_{which}.safetensors", edit)
        with pytest.raises(LatentgeoError, match="not registered") as ei:
            load(bad)
        assert "\n" not in str(ei.value) and "incompatible version" not in str(ei.value)
        assert not marker.exists(), f"loading a forged {which} with net={net} ran code"


def test_foreign_class_field_is_never_imported(tmp_path, denoiser_file):
    """`"class": "this.Foo"` used to import `this` (printing the Zen of Python); now nothing is imported. Run in a
    fresh interpreter so sys.modules shows exactly what loading imported."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    marker = tmp_path / "IMPORTED"
    (mod_dir / "zz_side_effect.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nclass Net: pass\n")
    files = []
    for cls in ("this.Foo", "zz_side_effect.Net", "os.path.join", "subprocess.Popen", "", 7):
        f = tmp_path / f"forged_{len(files)}.safetensors"
        _forge(denoiser_file, f, lambda m, c=cls: {**m, "class": c})
        files.append(str(f))
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(mod_dir)!r})
        import latentgeo
        from latentgeo.errors import LatentgeoError
        before = set(sys.modules)
        for f in {files!r}:
            try:
                latentgeo.load(f)
                print("LOADED", f)
            except LatentgeoError as e:
                assert "\\n" not in str(e)
        new = set(sys.modules) - before
        print("NEW", sorted(m for m in new if not m.startswith(("latentgeo", "torch", "numpy", "safetensors"))))
        print("THIS", "this" in sys.modules, "ZZ", "zz_side_effect" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "LOADED" not in r.stdout
    assert "THIS False ZZ False" in r.stdout, r.stdout
    assert "Beautiful is better than ugly" not in r.stdout + r.stderr
    assert not marker.exists()


def test_edited_config_values_are_checked_before_construction(tmp_path, denoiser_file):
    # unknown constructor argument
    bad = _forge(denoiser_file, tmp_path / "a.safetensors",
                 lambda m: {**m, "config": {**m["config"], "evil": "x"}})
    with pytest.raises(LatentgeoError, match="unknown argument 'evil'"):
        load(bad)
    # absurd width: refused from the meta-device build (no allocation of 1e9 x 1e9 weights)
    bad = _forge(denoiser_file, tmp_path / "b.safetensors",
                 lambda m: {**m, "config": {**m["config"], "net_kwargs": {**m["config"]["net_kwargs"],
                                                                           "hidden": 1_000_000_000}}})
    with pytest.raises(LatentgeoError, match="settings and weights disagree"):
        load(bad)
    # a non-JSON-object config and a non-finite value
    bad = _forge(denoiser_file, tmp_path / "c.safetensors", lambda m: {**m, "config": ["net"]})
    with pytest.raises(LatentgeoError, match="not a JSON object"):
        load(bad)
    bad = _forge(denoiser_file, tmp_path / "d.safetensors",
                 lambda m: {**m, "config": {**m["config"], "sigma_data": float("nan")}})
    with pytest.raises(LatentgeoError, match="finite"):
        load(bad)


def test_state_file_is_not_a_model_and_damaged_state_is_one_line(tmp_path):
    p = save_state(tmp_path / "state.safetensors", {"step": 3, "w": torch.ones(2)})
    with pytest.raises(LatentgeoError, match="training-state file .* load model.safetensors or ema.safetensors"):
        load(p)
    with safe_open(str(p), framework="pt") as f:
        meta = json.loads(f.metadata()["latentgeo"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["tree"] = {"__dict__": [["w", {"__tensor__": "no-such-key"}]]}
    save_file(tensors, str(p), metadata={"latentgeo": json.dumps(meta)})
    with pytest.raises(LatentgeoError, match="damaged"):
        load_state(p)


# Issue 21: metadata that is JSON but not an object (or nested 100,000 deep) was an AttributeError / RecursionError.
@pytest.mark.parametrize("raw, needle", [
    ("[1,2]", "is '[1,2]', not a JSON object"),
    ("42", "is '42', not a JSON object"),
    ("NaN", "is 'NaN', not a JSON object"),
    ('"a string"', "not a JSON object"),
    ("[" * 100000, "nests JSON 100,000 levels deep"),
    ('{"format": "latentgeo-checkpoint-1", "class": "EDMDenoiser", "config": {}, "extra": [1]}',
     "has an 'extra' entry of type list"),
])
def test_forged_metadata_that_is_not_an_object_is_one_line(tmp_path, raw, needle):
    p = tmp_path / "forged.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={"latentgeo": raw})
    for loader in (load, load_state):
        with pytest.raises(LatentgeoError) as e:
            loader(p)
        msg = str(e.value)
        assert needle in msg and str(p) in msg and "\n" not in msg, msg
        assert msg.endswith("; re-save it with latentgeo.save or use an intact copy"), msg


def test_no_loader_passes_file_strings_to_import_or_getattr(tmp_path, denoiser_file, flow_file, monkeypatch):
    """Record every string given to importlib.import_module, __import__ and getattr while loading forged files
    through every public loader; none may carry a name that only the file contains."""
    tag = "zqforged"
    forged = []
    for i, (src, edit) in enumerate([
        (denoiser_file, lambda m: {**m, "class": f"{tag}_mod.{tag}Class"}),
        (denoiser_file, lambda m: {**m, "config": {**m["config"], "net": f"{tag}_pkg.{tag}Net"}}),
        (flow_file, lambda m: {**m, "config": {**m["config"], "net": f"os.{tag}"}}),
        (denoiser_file, lambda m: {**m, "class": f"EDMDenoiser.{tag}"}),
    ]):
        forged.append(_forge(src, tmp_path / f"f{i}.safetensors", edit))
    seen = []
    real_import_module, real_import, real_getattr = importlib.import_module, builtins.__import__, builtins.getattr

    def spy_import_module(name, *a, **k):
        seen.append(("import_module", name))
        return real_import_module(name, *a, **k)

    def spy_import(name, *a, **k):
        seen.append(("__import__", name))
        return real_import(name, *a, **k)

    def spy_getattr(obj, name, *default):
        seen.append(("getattr", name))
        return real_getattr(obj, name, *default)

    monkeypatch.setattr(importlib, "import_module", spy_import_module)
    monkeypatch.setattr(builtins, "__import__", spy_import)
    monkeypatch.setattr(builtins, "getattr", spy_getattr)
    from latentgeo.resolve import resolve_denoiser, resolve_flow

    loaders = [latentgeo.load, lambda p: latentgeo.load_denoiser(p), lambda p: latentgeo.load_flow(p),
               lambda p: resolve_denoiser(str(p)), lambda p: resolve_flow(str(p))]
    refused = 0
    for f in forged:
        for loader in loaders:
            try:
                loader(f)
            except LatentgeoError:
                refused += 1
    monkeypatch.undo()
    assert refused == len(forged) * len(loaders)
    leaked = [s for s in seen if isinstance(s[1], str) and tag in s[1]]
    assert not leaked, f"a string from a file reached {leaked[0][0]}: {leaked[0][1]!r}"
    assert any(kind == "getattr" for kind, _ in seen), "the spy did not see any getattr call (test is not working)"


def test_resume_with_edited_config_json_is_refused_and_runs_nothing(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "latentgeo", "train", "diffusion", "--data", "moons", "--n", "64",
                        "--steps", "2", "--batch-size", "16", "--hidden", "8", "--depth", "1", "--quiet",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    marker = tmp_path / "PWNED"
    cfg = json.loads((out / "config.json").read_text())
    cfg["user"]["net"] = "os.system"
    cfg["user"]["net_kwargs"] = {"command": f"touch {marker}"}
    (out / "config.json").write_text(json.dumps(cfg))
    before = (out / "config.json").read_text()
    r = subprocess.run([sys.executable, "-m", "latentgeo", "train", "diffusion", "--data", "moons", "--n", "64",
                        "--steps", "4", "--batch-size", "16", "--hidden", "8", "--depth", "1", "--quiet",
                        "--resume", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and not marker.exists()
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "user.net" in lines[0]
    assert (out / "config.json").read_text() == before
