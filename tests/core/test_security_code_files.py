"""Files that carry code (TorchScript) load only when the user says so, and paths read from a run's record never
bring in such a loader (issue 21, security items 1-2).

The forged TorchScript file writes a marker through ``torch.from_file(..., shared=True)`` from its scripted
``__setstate__`` (runs inside ``torch.jit.load``) and from its ``forward``: the marker's bytes say exactly which of
the two ran. Loading it WITH the flag shows the marker works, so the refusals below can fail.
"""
import json
import warnings
from pathlib import Path
from typing import Tuple

import pytest
import torch

import latentgeo
from latentgeo.errors import LatentgeoError
from latentgeo.resolve import resolve_denoiser, resolve_encoder, resolve_flow

warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit is deprecated upstream


class _Evil(torch.nn.Module):
    """x -> x[:, :2]; writes 1s into the marker when unpickled (``__setstate__``) and 2s when called."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.sink = torch.zeros(8, dtype=torch.uint8)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        self.sink = torch.from_file(self.marker, shared=True, size=8, dtype=torch.uint8).fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sink = torch.from_file(self.marker, shared=True, size=8, dtype=torch.uint8).fill_(2)
        return x.flatten(1)[:, :2] * 1.0


class _Benign(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] * 1.0


def _marker(tmp_path) -> Path:
    m = tmp_path / "marker.bin"
    m.write_bytes(b"\0" * 8)
    return m


@pytest.fixture
def evil(tmp_path):
    m = _marker(tmp_path)
    f = tmp_path / "evil.pt"
    torch.jit.script(_Evil(str(m))).save(str(f))
    assert m.read_bytes() == b"\0" * 8
    return f, m


def test_torchscript_is_refused_without_the_flag_and_runs_with_it(evil):
    f, m = evil
    for load in (lambda **k: resolve_encoder(f, **k), lambda **k: resolve_denoiser(f, parametrization="ve", **k),
                 lambda **k: resolve_flow(f, parametrization="velocity", **k),
                 lambda **k: resolve_encoder(f.parent / "evil.pt", **k),
                 lambda **k: latentgeo.load_encoder(f, **k), lambda **k: latentgeo.load_denoiser(f, **k)):
        with pytest.raises(LatentgeoError, match="allow_torchscript=True") as e:
            load()
        assert "\n" not in str(e.value)
    assert m.read_bytes() == b"\0" * 8, "the file's code ran although TorchScript was not allowed"
    # a decoder file is TorchScript too
    with pytest.raises(LatentgeoError, match="allow_torchscript=True"):
        resolve_encoder(code=None, spec=torch.nn.Identity(), decoder=str(f))
    assert m.read_bytes() == b"\0" * 8
    enc, _, info = resolve_encoder(f, allow_torchscript=True)
    assert info["source"] == "torchscript" and m.read_bytes() == b"\1" * 8  # __setstate__ ran: the probe works
    x = torch.randn(3, 5)
    assert torch.equal(enc(x), x[:, :2]) and m.read_bytes() == b"\2" * 8


def test_cli_refuses_torchscript_without_the_flag(evil, tmp_path, cli_inproc):
    f, m = evil
    for args in (["diagnose", "--encoder", f, "--data", "digits", "--no-fisher", "--out", tmp_path / "dg"],
                 ["geometry", f, "--data", "digits", "--plots", tmp_path / "gm"],
                 ["fisher", "curves", "--denoiser", f, "--parametrization", "ve", "--data", "gmm2d", "--out",
                  tmp_path / "fc"]):
        r = cli_inproc(*args)
        err = r.err_lines
        assert r.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), (args[0], err)
        assert "--allow-torchscript" in err[0], err[0]
    assert m.read_bytes() == b"\0" * 8
    assert not (tmp_path / "dg" / "summary.json").exists()


def test_a_run_record_naming_torchscript_is_refused_naming_the_path(tmp_path, cli_inproc):
    """``latent_of`` in a run's config.json pointing at a TorchScript file: ``sample`` refuses it (even with
    --allow-torchscript on the command line), names the path, and nothing of the file runs."""
    enc = tmp_path / "enc.pt"
    torch.jit.script(_Benign()).save(str(enc))
    run = tmp_path / "latent-run"

    def cli(*args):
        r = cli_inproc(*args)
        return r.returncode, r.err_lines

    code, err = cli("train", "diffusion", "--encoder", enc, "--allow-torchscript", "--data", "digits", "--out", run,
                    "--steps", 2, "--hidden", 8, "--depth", 1, "--batch-size", 8, "--quiet", "--device", "cpu")
    assert code == 0, err
    user = json.loads((run / "config.json").read_text())["user"]
    assert user["latent_of"]["path"] == str(enc.resolve())
    m = _marker(tmp_path)
    torch.jit.script(_Evil(str(m))).save(str(enc))  # a stranger swaps the file the record names
    for extra in ([], ["--allow-torchscript"]):
        code, err = cli("sample", run, "--n", 2, "--steps", 2, "--quiet", "--device", "cpu", *extra)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        assert str(enc.resolve()) in err[0] and "latent_of" in err[0] and "never as TorchScript" in err[0], err[0]
    assert m.read_bytes() == b"\0" * 8
    assert not (run / "samples.npz").exists()


def test_recorded_specs_take_safetensors_models_only(tmp_path):
    from latentgeo.resolve import check_recorded_spec

    (tmp_path / "w.bin").write_bytes(b"x")
    (tmp_path / "w.pt2").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    for spec in (str(tmp_path / "w.bin"), str(tmp_path / "w.pt2"), str(tmp_path / "empty"),
                 {"path": str(tmp_path / "w.bin")}, "os:system", 42, None):
        with pytest.raises(LatentgeoError, match="config.json latent_of") as e:
            check_recorded_spec(spec, "encoder", "config.json latent_of")
        assert "\n" not in str(e.value)
    with pytest.raises(LatentgeoError, match="never runs code"):
        check_recorded_spec({"path": str(tmp_path), "code": "os:system"}, "encoder", "config.json latent_of")
    with pytest.raises(LatentgeoError, match="decoder file"):
        check_recorded_spec({"path": str(tmp_path / "empty"), "decoder": str(tmp_path / "w.bin")}, "encoder",
                            "config.json latent_of")
