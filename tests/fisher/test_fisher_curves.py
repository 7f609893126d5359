"""FI / FIR / MMSE-rate estimators against exact Gaussian-mixture references (REFERENCE.md §2)."""
import math

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher import FisherCurves, fir_deviation, fisher_curves
from latentgeo.fisher.exact import (GaussianMixture, gaussian_fi, gaussian_fir, gaussian_mmse,
                                    gaussian_mmse_rate)

torch.set_num_threads(1)
SIGMAS = [0.05, 0.2, 0.7, 2.5]
F64 = torch.float64


def _mixture(n, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 1.2 * torch.randn(K, n, generator=g, dtype=F64)
    # component covariances with eigenvalues in [0.2, 1.5] in random frames
    Q = torch.linalg.qr(torch.randn(K, n, n, generator=g, dtype=F64))[0]
    lam = 0.2 + 1.3 * torch.rand(K, n, generator=g, dtype=F64)
    covs = Q @ torch.diag_embed(lam) @ Q.transpose(-1, -2)
    w = 0.5 + torch.rand(K, generator=g, dtype=F64)
    return GaussianMixture(w, means, covs)


def _reference(gm, sigma, m=30000, seed=123):
    """Large independent Monte-Carlo of the exact quantities from exact Hessians (not from the estimator)."""
    g = torch.Generator().manual_seed(seed)
    ref = gm.fisher_reference(sigma, m=m, generator=g)
    return {"fi": ref["fi_trace"], "fir": ref["fir"], "mmse_rate": ref["mmse_rate"], "mmse": ref["mmse"]}


@pytest.mark.parametrize("n", [3, 6, 10])
def test_mixture_fi_fir_mmse_rate_within_3pct(n):
    gm = _mixture(n, seed=n)
    x0 = gm.sample(20000, torch.Generator().manual_seed(11))
    c = fisher_curves(gm.as_denoiser(), x0, SIGMAS, n_probes=8, generator=torch.Generator().manual_seed(12),
                      use_score=False)
    for i, s in enumerate(SIGMAS):
        ref = _reference(gm, s)
        for k in ("fi", "fir", "mmse_rate"):
            est = getattr(c, k)[i].item()
            assert abs(est / ref[k] - 1) < 0.03, (n, s, k, est, ref[k])
        # MMSE-rate identity with the exact references: mmse' = n - 2 tau I - tau^2 R
        tau = s * s
        ident = n - 2 * tau * ref["fi"] - tau ** 2 * ref["fir"]
        assert abs(ident / ref["mmse_rate"] - 1) < 0.03


def test_score_space_path_agrees_with_denoiser_path():
    gm = _mixture(4, seed=7)
    x0 = gm.sample(500, torch.Generator().manual_seed(1))
    a = fisher_curves(gm.as_denoiser(), x0, [0.01, 0.3, 3.0], generator=torch.Generator().manual_seed(3))
    b = fisher_curves(gm.as_denoiser(), x0, [0.01, 0.3, 3.0], generator=torch.Generator().manual_seed(3),
                      use_score=False)
    assert a.meta["score_space_jvp"] and not b.meta["score_space_jvp"]
    for k in ("fi", "fir", "mmse_rate"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), rtol=1e-6, atol=0)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_single_gaussian_closed_forms(sigma):
    n = 5
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))[0]
    C = Q @ torch.diag(torch.tensor([0.1, 0.3, 0.8, 1.5, 3.0], dtype=F64)) @ Q.T
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, n, dtype=F64) + 0.3, C[None])
    x0 = gm.sample(6000, g)
    c = fisher_curves(gm.as_denoiser(), x0, [sigma], n_probes=16, generator=g)
    tau = sigma ** 2
    exact = {"fi": gaussian_fi(C, tau), "fir": gaussian_fir(C, tau), "mmse": gaussian_mmse(C, tau),
             "mmse_rate": gaussian_mmse_rate(C, tau)}
    for k, v in exact.items():
        est, se = getattr(c, k)[0].item(), getattr(c, k + "_se")[0].item()
        assert abs(est - v.item()) < max(4 * se, 1e-12) and abs(est / v.item() - 1) < 0.03, (k, est, v)


def test_closed_forms_are_exact_identities():
    """Closed forms vs exact Hessians (deterministic) and vs tau-derivatives (autograd)."""
    n = 4
    g = torch.Generator().manual_seed(5)
    A = torch.randn(n, n, generator=g, dtype=F64)
    C = A @ A.T + 0.1 * torch.eye(n, dtype=F64)
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, n, dtype=F64), C[None])
    x = torch.randn(3, n, generator=g, dtype=F64)
    for tau in (0.01, 0.5, 7.0):
        H = gm.hessian(x, math.sqrt(tau))
        torch.testing.assert_close(-torch.diagonal(H, dim1=1, dim2=2).sum(-1), gaussian_fi(C, tau).expand(3))
        torch.testing.assert_close(-(H * H).sum((1, 2)), gaussian_fir(C, tau).expand(3))
        J = torch.eye(n, dtype=F64) + tau * H
        torch.testing.assert_close((J * J).sum((1, 2)), gaussian_mmse_rate(C, tau).expand(3))
        t = torch.tensor(tau, dtype=F64, requires_grad=True)
        dI = torch.autograd.grad(gaussian_fi(C, t), t)[0]
        dm = torch.autograd.grad(gaussian_mmse(C, t), t)[0]
        torch.testing.assert_close(dI, gaussian_fir(C, tau))
        torch.testing.assert_close(dm, gaussian_mmse_rate(C, tau))
        torch.testing.assert_close(gaussian_mmse(C, tau), n * tau - tau ** 2 * gaussian_fi(C, tau))


def test_hutchinson_se_shrinks_like_inverse_sqrt_probes():
    """With a single Gaussian the Hessian is constant, so all FIR variance is probe variance: SE ~ 1/sqrt(P),
    and the reported SE matches the spread of repeated estimates (catches a missing division by P)."""
    n = 6
    C = torch.diag(torch.linspace(0.2, 2.0, n, dtype=F64))
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, n, dtype=F64), C[None])
    x0 = gm.sample(200, torch.Generator().manual_seed(0))
    D = gm.as_denoiser()
    se = {}
    for P in (2, 32):
        ests, ses = [], []
        for r in range(12):
            c = fisher_curves(D, x0, [0.3], n_probes=P, generator=torch.Generator().manual_seed(100 + r),
                              probe="gaussian")
            ests.append(c.fir[0].item())
            ses.append(c.fir_se[0].item())
        se[P] = sum(ses) / len(ses)
        spread = torch.tensor(ests).std().item()
        assert 0.5 < spread / se[P] < 1.8, (P, spread, se[P])
        exact = gaussian_fir(C, 0.09).item()
        assert abs(sum(ests) / len(ests) / exact - 1) < 0.03
    ratio = se[2] / se[32]
    assert 3.2 < ratio < 4.8, ratio  # sqrt(32/2) = 4


class _TinyEDM(torch.nn.Module):
    """EDM-style preconditioned untrained MLP: a realistic, non-exact denoiser."""

    def __init__(self, n=8, sd=0.5):
        super().__init__()
        self.sd = sd
        self.net = torch.nn.Sequential(torch.nn.Linear(n + 1, 32), torch.nn.SiLU(), torch.nn.Linear(32, n))

    def forward(self, x, sigma):
        s = sigma[:, None].to(x.dtype)
        sd2 = self.sd ** 2
        c_in = 1 / torch.sqrt(s ** 2 + sd2)
        h = self.net(torch.cat([c_in * x, torch.log(s) / 4], 1))
        return sd2 / (s ** 2 + sd2) * x + s * self.sd / torch.sqrt(s ** 2 + sd2) * h


def test_no_nan_across_sigma_range_float32_and_float64():
    torch.manual_seed(0)
    D = _TinyEDM()
    x0 = torch.randn(64, 8)
    sig = torch.logspace(math.log10(0.002), math.log10(80), 9)
    for dt in (torch.float32, F64):
        c = fisher_curves(D, x0, sig, n_probes=4, dtype=dt, generator=torch.Generator().manual_seed(0))
        for k in ("fi", "fir", "mmse", "mmse_rate", "fi_se", "fir_se", "mmse_se", "mmse_rate_se"):
            assert torch.isfinite(getattr(c, k)).all(), (dt, k)
        assert (c.fir <= 0).all() and (c.fi > 0).all()
    assert next(D.parameters()).dtype == torch.float32  # the user's module is not converted in place


def test_small_sigma_exact_mixture_stays_accurate():
    """At sigma = 0.002 (tau = 4e-6) the FIR is ~ tr C^-2; float64 estimate stays within 3%."""
    n = 3
    C = torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=F64))
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, n, dtype=F64), C[None])
    x0 = gm.sample(2000, torch.Generator().manual_seed(0))
    for use in ("auto", False):
        c = fisher_curves(gm.as_denoiser(), x0, [0.002], n_probes=8, generator=torch.Generator().manual_seed(1),
                          use_score=use)
        assert abs(c.fir[0].item() / gaussian_fir(C, 4e-6).item() - 1) < 0.03
        assert abs(c.mmse_rate[0].item() / gaussian_mmse_rate(C, 4e-6).item() - 1) < 0.03


def test_chunking_does_not_change_result():
    gm = _mixture(3, seed=1)
    x0 = gm.sample(50, torch.Generator().manual_seed(0))
    a = fisher_curves(gm.as_denoiser(), x0, [0.1, 1.0], n_probes=3, generator=torch.Generator().manual_seed(4))
    b = fisher_curves(gm.as_denoiser(), x0, [0.1, 1.0], n_probes=3, generator=torch.Generator().manual_seed(4),
                      batch_size=7)
    # different chunking draws probes in a different order; the noise is shared, so FI and MMSE agree exactly
    torch.testing.assert_close(a.fi, b.fi)
    torch.testing.assert_close(a.mmse, b.mmse)
    assert torch.allclose(a.fir, b.fir, rtol=0.3)


def test_roundtrip_and_deviation(tmp_path):
    gm = _mixture(3, seed=2)
    x0 = gm.sample(100, torch.Generator().manual_seed(0))
    c = fisher_curves(gm.as_denoiser(), x0, [0.1, 1.0], generator=torch.Generator().manual_seed(0), label="x")
    c.save(tmp_path / "c.json")
    c2 = FisherCurves.load(tmp_path / "c.json")
    torch.testing.assert_close(c.fir, c2.fir)
    assert c2.n == 3 and c2.label == "x"
    dev = fir_deviation(c, c)
    assert torch.all(dev.d_r == 0) and torch.all(dev.d_i == 0)
    c3 = fisher_curves(gm.as_denoiser(), x0, [0.2, 1.0], generator=torch.Generator().manual_seed(0))
    with pytest.raises(LatentgeoError):
        fir_deviation(c, c3)
    c.plot(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_bad_inputs_raise_one_line_errors():
    D = lambda x, s: x  # noqa: E731
    with pytest.raises(LatentgeoError):
        fisher_curves(D, torch.randn(1, 3), [0.1])
    with pytest.raises(LatentgeoError):
        fisher_curves(D, torch.randn(4, 3), [0.0, 0.1])
    with pytest.raises(LatentgeoError):
        fisher_curves(D, torch.full((4, 3), float("nan")), [0.1])
    with pytest.raises(LatentgeoError):
        fisher_curves(lambda x, s: x * float("nan"), torch.randn(4, 3), [0.1])


def test_edm_residual_path_matches_plain_jvp_in_float64():
    """The analytic-residual JVP for EDM-preconditioned denoisers equals the plain JVP of D (float64)."""
    pytest.importorskip("latentgeo.diffusion")
    from latentgeo.diffusion import EDMDenoiser

    torch.manual_seed(0)
    den = EDMDenoiser("mlp", sigma_data=0.7, net_kwargs={"in_dim": 5, "hidden": 16, "depth": 1})
    with torch.no_grad():
        for p in den.parameters():
            p.add_(0.1 * torch.randn_like(p))  # the last layer is zero-initialised; make F non-trivial
    x0 = torch.randn(40, 5, dtype=F64)
    kw = dict(n_probes=3, dtype=F64)
    a = fisher_curves(den, x0, [0.01, 0.5, 20.0], generator=torch.Generator().manual_seed(0), **kw)
    b = fisher_curves(den, x0, [0.01, 0.5, 20.0], generator=torch.Generator().manual_seed(0), use_score=False, **kw)
    assert a.meta["edm_residual_jvp"] and not b.meta["edm_residual_jvp"]
    for k in ("fi", "fir", "mmse", "mmse_rate"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), rtol=1e-7, atol=1e-12)


def test_vmap_and_stacked_probes_agree_and_fallback():
    gm = _mixture(4, seed=3)
    x0 = gm.sample(64, torch.Generator().manual_seed(0))
    kw = dict(n_probes=5, batch_size=40)
    a = fisher_curves(gm.as_denoiser(), x0, [0.05, 1.0], generator=torch.Generator().manual_seed(1),
                      probe_batching="vmap", use_score=False, **kw)
    b = fisher_curves(gm.as_denoiser(), x0, [0.05, 1.0], generator=torch.Generator().manual_seed(1),
                      probe_batching="stack", use_score=False, **kw)
    assert a.meta["probe_batching"] == "vmap" and b.meta["probe_batching"] == "stack"
    for k in ("fi", "fir", "mmse", "mmse_rate"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), rtol=1e-10, atol=0)

    def no_vmap(*a, **k):  # a denoiser that vmap cannot handle: simulate vmap failing
        raise RuntimeError("vmap: unsupported operator")

    import latentgeo.fisher.curves as curves_mod

    mp = pytest.MonkeyPatch()
    mp.setattr(curves_mod.torch.func, "vmap", no_vmap)
    try:
        c = fisher_curves(gm.as_denoiser(), x0, [0.05, 1.0], generator=torch.Generator().manual_seed(1),
                          use_score=False, **kw)
        with pytest.raises(RuntimeError):
            fisher_curves(gm.as_denoiser(), x0, [0.05], probe_batching="vmap", **kw)
    finally:
        mp.undo()
    assert c.meta["probe_batching"] == "stack"
    torch.testing.assert_close(c.fir, b.fir, rtol=1e-10, atol=0)
