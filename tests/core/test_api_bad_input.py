"""Bad inputs to the Fisher and spacetime APIs give one-line LatentgeoErrors (issue 12, API part).

Each test reproduces a defect of the earlier code: silent broadcasting of a wrong-shape denoiser, NaN written into
the curves, the catastrophically cancelled MMSE identity reported as an FI (-1.4e4 at sigma 0.002 for an exact FI
of 4), NaN/inf from sigma = 0 in the spacetime family, a misleading "lower lr" for half precision, torch's
"element 0 of tensors does not require grad" for a NaN denoiser, and a Gaussian-mixture oracle accepting NaN means
and negative-definite covariances.
"""
import json
import math

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher import FisherCurves, fisher_curves
from latentgeo.fisher.exact import GaussianMixture, gaussian_fi
from latentgeo.spacetime import (curve_energy, curve_length, edit_distance, edit_distance_matrix, eta, geodesic,
                                 kl_from_state, mu)
from latentgeo.spacetime.diffed import pf_ode_path

torch.set_num_threads(1)
F64 = torch.float64


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and ";" in msg, msg  # problem; fix
    return msg


def _gauss(n=4):
    return GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, n, dtype=F64), torch.eye(n, dtype=F64)[None])


def _mix1d():
    return GaussianMixture(torch.tensor([0.5, 0.5], dtype=F64), torch.tensor([[-1.0], [1.0]], dtype=F64),
                           torch.full((2, 1, 1), 0.05, dtype=F64))


# --------------------------------------------------------------------------- fisher_curves
def test_fisher_curves_wrong_shape_denoiser_names_both_shapes():
    gm = _gauss()
    D = gm.as_denoiser()
    x0 = gm.sample(20, torch.Generator().manual_seed(0))
    for bad in (lambda x, s: D(x, s)[:, :1], lambda x, s: D(x, s).sum(1), lambda x, s: D(x, s)[:1]):
        with pytest.raises(LatentgeoError) as e:
            fisher_curves(bad, x0, [0.5], n_probes=1, use_score=False)
        msg = _one_line(e)
        assert "(2, 4)" in msg and "shape" in msg, msg


def test_fisher_curves_nan_denoiser_names_sigma():
    gm = _gauss()
    D = gm.as_denoiser()
    x0 = gm.sample(20, torch.Generator().manual_seed(0))

    def nan_at_small(x, s):
        return D(x, s) * (float("nan") if float(s.reshape(-1)[0]) < 0.05 else 1.0)

    with pytest.raises(LatentgeoError, match=r"NaN/inf at sigma = 0\.01") as e:
        fisher_curves(nan_at_small, x0, [1.0, 0.01], n_probes=1, use_score=False)
    _one_line(e)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fi_mmse_at_small_sigma_is_absent_or_accurate(dtype, tmp_path):
    n, sigmas = 4, [0.002, 3.0]
    gm = _gauss(n)
    x0 = gm.sample(1000, torch.Generator().manual_seed(0)).to(dtype)
    c = fisher_curves(gm.as_denoiser(), x0, sigmas, n_probes=1, generator=torch.Generator().manual_seed(1))
    for i, s in enumerate(sigmas):
        exact = float(gaussian_fi(torch.eye(n, dtype=F64), s * s))
        v, se = float(c.fi_mmse[i]), float(c.fi_mmse_se[i])
        assert math.isfinite(se)
        if math.isnan(v):  # explicitly absent, with the reason recorded
            assert s in c.meta["fi_mmse_unavailable"] and "cancels" in c.meta["fi_mmse_note"]
            assert not bool(c.fi_mmse_ok[i])
        else:
            assert abs(v - exact) < 4 * se + 1e-12 and abs(v / exact - 1) < 0.2, (s, v, se, exact)
    # sigma 0.002: the identity cancels catastrophically (was -1.4e4 in float32 for an exact FI of 4)
    assert math.isnan(float(c.fi_mmse[0])) and float(c.fi_mmse_se[0]) > 4.0
    # sigma 3: well conditioned, reported, and close to the exact FI
    assert bool(c.fi_mmse_ok[1])
    # JSON stays valid (no NaN literal) and round-trips the absence
    p = tmp_path / "c.json"
    c.save(p)
    rec = json.loads(p.read_text(), parse_constant=lambda t: pytest.fail(f"non-JSON constant {t}"))
    assert rec["fi_mmse"][0] is None
    back = FisherCurves.load(p)
    assert math.isnan(float(back.fi_mmse[0])) and math.isclose(float(back.fi_mmse[1]), float(c.fi_mmse[1]))


# --------------------------------------------------------------------------- spacetime family
def test_eta_and_curve_energy_refuse_sigma_zero_and_negative():
    D = _mix1d().as_denoiser()
    xs = torch.linspace(-1, 1, 5, dtype=F64)[:, None]
    with pytest.raises(LatentgeoError, match="sigma must be > 0 at every curve point") as e:
        eta(torch.ones(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
    _one_line(e)
    for bad in (0.0, -0.1, float("nan")):
        sig = torch.tensor([bad, 0.1, 0.1, 0.1, 0.1], dtype=F64)
        for fn in (curve_energy, curve_length):
            with pytest.raises(LatentgeoError, match="sigma must be > 0 at every curve point"):
                fn(D, xs, sig, n_probes=None)
    with pytest.raises(LatentgeoError, match="sigma must be > 0"):
        mu(D, torch.ones(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), n_probes=None)
    with pytest.raises(LatentgeoError, match="sigma_star must be finite and > 0"):
        kl_from_state(D, torch.zeros(1, dtype=F64), 0.0, xs, torch.full((5,), 0.1, dtype=F64), n_probes=None)
    with pytest.raises(LatentgeoError, match="NaN or inf"):
        curve_energy(D, xs * float("nan"), torch.full((5,), 0.1, dtype=F64), n_probes=None)
    with pytest.raises(LatentgeoError, match="at least 2 points"):
        curve_energy(D, xs[:1], torch.full((1,), 0.1, dtype=F64), n_probes=None)


def test_curve_energy_nan_denoiser_names_sigma():
    D = _mix1d().as_denoiser()
    xs = torch.linspace(-1, 1, 5, dtype=F64)[:, None]
    sig = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.1], dtype=F64)

    def nan_above(x, s):
        return torch.where((s > 0.25)[:, None], torch.full_like(x, float("nan")), D(x, s))

    with pytest.raises(LatentgeoError, match=r"denoiser returned NaN/inf at sigma = 0\.3") as e:
        curve_energy(nan_above, xs, sig, n_probes=None)
    _one_line(e)


# --------------------------------------------------------------------------- geodesic
_A = (torch.tensor([-1.0], dtype=F64), 0.1)
_B = (torch.tensor([1.0], dtype=F64), 0.1)
_KW = dict(n_points=8, n_nodes=2, steps=2, n_probes=None)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_geodesic_refuses_half_precision(half):
    D = _mix1d().as_denoiser()
    with pytest.raises(LatentgeoError) as e:
        geodesic(D, (_A[0].to(half), 0.1), (_B[0].to(half), 0.1), **_KW)
    msg = _one_line(e)
    assert "half precision" in msg and "float32 or float64" in msg and "lr" not in msg.split(";")[0]


@pytest.mark.parametrize("chunk", [None, 4])
@pytest.mark.parametrize("kind", ["scaled", "constant"])
def test_geodesic_nan_denoiser_one_line_error(kind, chunk):
    D = _mix1d().as_denoiser()
    if kind == "scaled":  # NaN with a graph: was "energy became nan; lower lr"
        def bad(x, s):
            return D(x, s) * float("nan")
    else:  # NaN without a graph: was torch's "element 0 of tensors does not require grad"
        def bad(x, s):
            return torch.full_like(x, float("nan"))
    with pytest.raises(LatentgeoError, match=r"denoiser returned NaN/inf at sigma = 0\.1") as e:
        geodesic(bad, _A, _B, chunk_size=chunk, **_KW)
    _one_line(e)


def test_geodesic_nan_only_at_high_noise_is_named():
    D = _mix1d().as_denoiser()

    def bad(x, s):  # fine at the endpoints, NaN where the curve rises to sigma > 0.105
        return torch.where((s > 0.105)[:, None], x * float("nan"), D(x, s))

    nodes = torch.zeros(1, 2, 2, dtype=F64)
    nodes[0, :, 0] = -1.0  # lower log-SNR at the interior knots: the curve rises in sigma
    with pytest.raises(LatentgeoError, match=r"denoiser returned NaN/inf at sigma = 0\.1[1-9]") as e:
        geodesic(bad, _A, _B, init_nodes=nodes, **_KW)
    _one_line(e)


def test_geodesic_detached_denoiser_and_bad_options():
    D = _mix1d().as_denoiser()

    def detached(x, s):
        return D(x, s).detach()

    with pytest.raises(LatentgeoError, match="does not depend differentiably on x"):
        geodesic(detached, _A, _B, **_KW)
    for kw in (dict(lr=float("nan")), dict(lr=0.0), dict(n_probes=0), dict(init_nodes=torch.full((1, 2, 2), math.nan)),
               dict(init_nodes=torch.zeros(1, 3, 2)), dict(log_every=0)):
        with pytest.raises(LatentgeoError):
            geodesic(D, _A, _B, **{**_KW, **kw})


# --------------------------------------------------------------------------- GaussianMixture
@pytest.mark.parametrize("case, match", [
    ("nan_mean", r"means contain NaN or inf \(component 1\)"),
    ("neg_def", r"component 1 is not positive semi-definite"),
    ("indefinite", r"component 0 is not positive semi-definite"),
    ("asym", r"component 0 is not symmetric"),
    ("neg_weight", r"non-negative"),
    ("nan_weight", r"weights contain NaN"),
    ("zero_weights", r"positive sum"),
    ("inf_cov", r"component 0 contains NaN or inf"),
])
def test_gaussian_mixture_validates(case, match):
    eye = torch.eye(2, dtype=F64)
    w, m, C = torch.ones(2, dtype=F64), torch.zeros(2, 2, dtype=F64), torch.stack([eye, eye])
    if case == "nan_mean":
        m[1, 0] = float("nan")
    elif case == "neg_def":
        C[1] = -eye
    elif case == "indefinite":
        C[0] = torch.diag(torch.tensor([1.0, -0.5], dtype=F64))
    elif case == "asym":
        C[0, 0, 1] = 0.5
    elif case == "neg_weight":
        w[1] = -0.5
    elif case == "nan_weight":
        w[0] = float("nan")
    elif case == "zero_weights":
        w[:] = 0.0
    elif case == "inf_cov":
        C[0, 1, 1] = float("inf")
    with pytest.raises(LatentgeoError, match=match) as e:
        GaussianMixture(w, m, C)
    _one_line(e)


def test_gaussian_mixture_still_accepts_singular_psd_and_checks_sigma():
    U = torch.linalg.qr(torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0)))[0]
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, 5, dtype=F64), (U @ U.T)[None])  # data on a plane
    assert torch.isfinite(gm.score(torch.zeros(1, 5, dtype=F64), 0.1)).all()
    for s in (-0.1, float("nan")):
        with pytest.raises(LatentgeoError, match="sigma must be finite and >= 0"):
            gm.denoiser(torch.zeros(1, 5, dtype=F64), s)


# --------------------------------------------------------------------------- edit distance
def test_edit_distance_inputs():
    D = _mix1d().as_denoiser()
    kw = dict(n_points=8, n_nodes=2, steps=1, n_probes=None)
    one = torch.tensor([1.0], dtype=F64)
    with pytest.raises(LatentgeoError, match="a contains NaN"):
        edit_distance(D, torch.tensor([math.nan], dtype=F64), one, **kw)
    with pytest.raises(LatentgeoError, match="different shapes"):
        edit_distance(D, one, torch.ones(2, dtype=F64), **kw)
    with pytest.raises(LatentgeoError, match="X contains NaN"):
        edit_distance_matrix(D, torch.tensor([[math.nan], [1.0]], dtype=F64), **kw)
    with pytest.raises(LatentgeoError, match="one data point per row"):
        edit_distance_matrix(D, torch.tensor([0.0, 1.0], dtype=F64), **kw)
    with pytest.raises(LatentgeoError, match="same shape"):
        edit_distance_matrix(D, torch.zeros(2, 1, dtype=F64), torch.zeros(2, 2, dtype=F64), **kw)
    with pytest.raises(LatentgeoError, match="pair_batch"):
        edit_distance_matrix(D, torch.zeros(2, 1, dtype=F64), pair_batch=0, **kw)
    with pytest.raises(LatentgeoError, match="sigma_min"):
        edit_distance_matrix(D, torch.zeros(2, 1, dtype=F64), sigma_min=0.0, **kw)
    with pytest.raises(LatentgeoError, match="finite and > 0"):
        pf_ode_path(D, torch.zeros(1, 1, dtype=F64), torch.tensor([0.1, math.nan], dtype=F64))


# --------------------------------------------------------------------------- issue 21: JSON readers, option ranges
def test_read_json_refuses_deep_large_and_special_files_before_parsing(tmp_path, monkeypatch):
    import os

    from latentgeo import runfolder
    from latentgeo.runfolder import read_json

    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"a": "[[[[\"{{", "b": [[1], {"c": []}]}))
    assert read_json(ok) == {"a": "[[[[\"{{", "b": [[1], {"c": []}]}  # brackets inside strings do not count
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:  # 17 MiB, sparse: refused from its size alone
        f.truncate(17 * 2 ** 20)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # reading it would block forever
    for path, needle in ((deep, "nests JSON 100,000 levels deep (latentgeo reads at most 100)"),
                         (big, "is 17.0 MiB, more than the 16 MiB a JSON file latentgeo reads may hold"),
                         (fifo, "is not a regular file"), ("/dev/zero", "is not a regular file")):
        with pytest.raises(LatentgeoError) as e:
            read_json(path, "diffusers model config", fix="re-download the model")
        msg = _one_line(e)
        assert needle in msg and msg.endswith("; re-download the model"), msg
    # were the depth scan ever fooled, the parser's RecursionError is still one line
    monkeypatch.setattr(runfolder, "_json_depth", lambda text: 0)
    with pytest.raises(LatentgeoError, match="nests JSON too deeply to read") as e:
        read_json(deep)
    _one_line(e)


def test_fisher_curves_load_of_a_deep_file_is_one_line(tmp_path):
    p = tmp_path / "curves.json"
    p.write_text('{"sigmas": ' + "[" * 100000)
    with pytest.raises(LatentgeoError, match="nests JSON") as e:
        FisherCurves.load(p)
    _one_line(e)


@pytest.mark.parametrize("value, kw, needle", [
    (-0.0, dict(lo=0, lo_open=True), "--x must be > 0, got -0.0; pass a value above 0"),
    (0.0, dict(lo=0, lo_open=True), "--x must be > 0, got 0.0; pass a value above 0"),
    (-1, dict(lo=0), "--x must be >= 0, got -1; pass a value of at least 0"),
    (2.0, dict(hi=1, hi_open=True), "--x must be < 1, got 2.0; pass a value below 1"),
    (float("nan"), {}, "--x must be a finite number, got nan; pass an ordinary number"),
])
def test_float_option_errors_carry_a_fix(value, kw, needle):
    from latentgeo.cli._options import valid_float

    with pytest.raises(LatentgeoError) as e:
        valid_float(value, "--x", **kw)
    assert _one_line(e) == needle


def test_int_option_errors_carry_a_fix():
    from latentgeo.cli._options import valid_int

    with pytest.raises(LatentgeoError) as e:
        valid_int(-1, "--steps", lo=1)
    assert _one_line(e) == "--steps must be >= 1, got -1; pass 1 or more"
