"""`latentgeo diffed RUN --matrix N`: all pairs, resumable after Ctrl-C without recomputing, refusing changed settings,
class statistics with CIs for labelled data (tiny trained digits / moons models, few steps)."""
import json

import numpy as np
import pytest

import latentgeo.spacetime.diffed as diffed_mod
from latentgeo.cli import main

FAST = ["--n-points", "6", "--steps", "3", "--n-nodes", "3", "--eval-probes", "2", "--boot", "50", "--quiet"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from latentgeo.data import load
    from latentgeo.diffusion import train_denoiser

    out = tmp_path_factory.mktemp("run_digits")
    train_denoiser(load("digits", n=256), out, net="mlp", steps=20, batch_size=64,
                   net_kwargs={"hidden": 16, "depth": 1}, progress=False, device="cpu",
                   data_info={"data": "digits", "image": True})
    return out


def _main(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def _matrix(argv):
    main(argv)
    out = argv[argv.index("--out") + 1]
    with np.load(f"{out}/diffed_matrix.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(open(f"{out}/diffed_matrix.json").read())


class _Interrupt:
    """Counts edit_distance_pairs calls (one per batch of pairs) and raises KeyboardInterrupt on call ``at``."""

    def __init__(self, at=None):
        self.calls, self.at, self.real = 0, at, diffed_mod.edit_distance_pairs

    def __call__(self, *a, **k):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            raise KeyboardInterrupt
        return self.real(*a, **k)


def test_matrix_outputs_labels_and_statistics(digits_run, tmp_path, capsys):
    out = tmp_path / "m"
    arrays, rec = _matrix(["diffed", str(digits_run), "--data", "digits", "--matrix", "20", "--out", str(out)] + FAST)
    D = arrays["matrix"]
    assert D.shape == (20, 20) and np.allclose(D, D.T) and np.all(np.diag(D) == 0)
    assert np.all(D[~np.eye(20, dtype=bool)] > 0)
    assert np.bincount(arrays["labels"], minlength=10).tolist() == [2] * 10  # stratified
    assert len(set(arrays["indices"].tolist())) == 20
    # the Euclidean matrix is the pixel distance of the drawn test images
    from latentgeo.data import digits

    x, y = digits(split="test", return_labels=True)
    sel = x[arrays["indices"]].reshape(20, -1).double()
    assert np.allclose(arrays["euclid"], np.linalg.norm(sel[:, None] - sel[None], axis=-1), atol=1e-6)
    assert np.array_equal(arrays["labels"], y.numpy()[arrays["indices"]])
    for name in ("diffed", "euclid", "ssim"):
        for key in ("knn1", "auc", "ratio", "mean_within", "mean_between"):
            v = rec["semantics"][name][key]
            assert v["ci95"] is None or v["ci95"][0] <= v["ci95"][1]
    assert rec["semantics_sentence"].startswith("DiffED separates classes")
    assert rec["cost"]["pairs_computed_this_run"] == 190 and rec["cost"]["seconds_per_pair"] > 0
    assert rec["settings"]["warm_start"] == "built-in profile"  # 190 pairs: too few for a pilot
    assert (out / "diffed_matrix.png").stat().st_size > 1000
    assert "DiffED same-class mean" in capsys.readouterr().out


def test_draw_is_a_prefix_and_stratified(digits_run, tmp_path):
    a, _ = _matrix(["diffed", str(digits_run), "--data", "digits", "--matrix", "4", "--out", str(tmp_path / "a")]
                   + FAST)
    b, rec = _matrix(["diffed", str(digits_run), "--data", "digits", "--matrix", "10", "--out",
                      str(tmp_path / "b")] + FAST)
    assert np.array_equal(a["indices"], b["indices"][:4])  # the first N of one seeded draw
    assert sorted(b["labels"].tolist()) == list(range(10))
    assert "semantics" not in rec and "no two of one class" in rec["semantics_note"]


def test_interrupt_then_resume_gives_the_uninterrupted_matrix(digits_run, tmp_path, monkeypatch, capsys):
    base = ["diffed", str(digits_run), "--data", "digits", "--matrix", "9", "--pair-batch", "5"] + FAST  # 36 pairs
    ref, _ = _matrix(base + ["--out", str(tmp_path / "ref")])
    out = str(tmp_path / "run")
    stop = _Interrupt(at=4)  # 3 batches of 5 pairs finish, the 4th is interrupted
    monkeypatch.setattr(diffed_mod, "edit_distance_pairs", stop)
    capsys.readouterr()
    assert _main(base + ["--out", out]) == 130
    err = capsys.readouterr().err
    assert f"15 of 36 pairs saved in {out}; re-run the same command to resume" in err
    count = _Interrupt()
    monkeypatch.setattr(diffed_mod, "edit_distance_pairs", count)
    got, rec = _matrix(base + ["--out", out])
    assert count.calls == 5  # ceil(21 / 5) batches: the finished pairs are not recomputed
    assert rec["cost"]["pairs_resumed"] == 15 and rec["cost"]["pairs_computed_this_run"] == 21
    assert rec["cost"]["runs"] == 2
    assert np.array_equal(got["matrix"], ref["matrix"])
    # a third run computes nothing
    count2 = _Interrupt()
    monkeypatch.setattr(diffed_mod, "edit_distance_pairs", count2)
    again, rec = _matrix(base + ["--out", out])
    assert count2.calls == 0 and rec["cost"]["pairs_resumed"] == 36
    assert np.array_equal(again["matrix"], ref["matrix"])


def test_changed_setting_refuses_unless_fresh(digits_run, tmp_path, capsys):
    out = str(tmp_path / "m")
    base = ["diffed", str(digits_run), "--data", "digits", "--matrix", "5", "--out", out] + FAST
    main(base)
    capsys.readouterr()
    changed = [a if a != "3" or i != base.index("--steps") + 1 else "4" for i, a in enumerate(base)]
    assert _main(changed) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--steps" in err[0] and "--fresh" in err[0]
    assert _main(base[:-1] + ["--no-warm", "--quiet"]) == 2
    assert "--warm" in capsys.readouterr().err
    _, rec = _matrix(changed + ["--fresh"])
    assert rec["cost"]["pairs_computed_this_run"] == 10 and rec["cost"]["runs"] == 1


def test_matrix_too_large_and_unlabelled_data(digits_run, tmp_path, capsys):
    assert _main(["diffed", str(digits_run), "--data", "digits", "--matrix", "400", "--out",
                  str(tmp_path / "x")] + FAST) == 2
    assert "exceeds the 359 samples" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unlabelled_vectors_have_rank_correlations_only(tmp_path):
    from latentgeo.data import load
    from latentgeo.diffusion import train_denoiser

    run = tmp_path / "moons"
    train_denoiser(load("moons", n=256), run, net="mlp", steps=10, batch_size=64,
                   net_kwargs={"hidden": 16, "depth": 1}, progress=False, device="cpu",
                   data_info={"data": "moons", "image": False})
    arrays, rec = _matrix(["diffed", str(run), "--data", "moons", "--matrix", "6", "--out", str(tmp_path / "m"),
                           "--probes", "exact", "--eval-probes", "exact", "--n-points", "6", "--steps", "3",
                           "--boot", "20", "--quiet"])
    assert "labels" not in arrays and "semantics" not in rec and "dssim" not in arrays
    assert "euclid" in rec["rank_correlations"]
    lo, hi = rec["mean"]["diffed"]["ci95"]
    assert lo <= hi and rec["mean"]["diffed"]["value"] > 0
