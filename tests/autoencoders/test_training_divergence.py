"""fit() reports a diverged run (loss far above its best) instead of handing back a broken model silently, and
grad_clip reaches the training loop."""
import warnings

import pytest
import torch
from torch import nn

from latentgeo.autoencoders import fit, train_autoencoder

torch.set_num_threads(1)


def _scripted_loss(values):
    """A loss that follows ``values`` step by step (plus 0 * a parameter so it has a gradient)."""
    it = iter(values)

    def loss_fn(b, g, w):
        return w.sum() * 0 + next(it)
    return loss_fn


def test_a_loss_that_blows_up_is_flagged():
    m = nn.Linear(2, 1)
    w = next(m.parameters())
    vals = [1.0] * 40 + [0.05] * 40 + [500.0] * 40
    f = _scripted_loss(vals)
    with pytest.warns(RuntimeWarning, match="diverged: its loss rose from 0.05"):
        r = fit(m, lambda b, g: f(b, g, w), torch.randn(64, 2), steps=120, batch_size=8, eval_every=20)
    assert r["diverged"] is True


def test_a_decreasing_loss_is_not_flagged():
    m = nn.Linear(2, 1)
    w = next(m.parameters())
    f = _scripted_loss([1.0 / (1 + i) for i in range(120)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = fit(m, lambda b, g: f(b, g, w), torch.randn(64, 2), steps=120, batch_size=8, eval_every=20)
    assert r["diverged"] is False


def test_grad_clip_is_applied_and_recorded(tmp_path, monkeypatch):
    seen = []
    orig = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        seen.append(float(max_norm))
        return orig(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    x = torch.rand(64, 6) * 2 - 1
    _, _, info = train_autoencoder("ae", x, latent_dim=2, steps=5, batch_size=16, grad_clip=0.5,
                                   out=str(tmp_path / "ae"))
    assert seen and set(seen) == {0.5}
    import json

    assert json.loads((tmp_path / "ae" / "config.json").read_text())["grad_clip"] == 0.5
    assert info["joint_stage"]["diverged"] is False
