"""Full-atom alanine dipeptide (issue 20): geometry and metrics against closed forms; OpenMM pieces against
independent OpenMM evaluations; the CLI on 2 tiny paths."""
import json

import numpy as np
import pytest

from latentgeo.errors import LatentgeoError
from latentgeo.molecules.alanine_full import (HEAVY_ATOMS, KB_KJ_MOL_K, align, build_coordinates, kabsch,
                                              path_metrics, phi_psi, reparam_arclength, restraint_kappas,
                                              rmsd_heavy, thp_hits)


def _rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_kabsch_exact_on_rotated_copy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(22, 3))
    R0, t0 = _rotation(rng), rng.normal(size=(1, 3))
    Y = X @ R0.T + t0
    R, t = kabsch(X, Y)
    np.testing.assert_allclose(R, R0, atol=1e-12)
    np.testing.assert_allclose(t, t0, atol=1e-12)
    np.testing.assert_allclose(align(Y, X, atoms=None), X, atol=1e-12)
    np.testing.assert_allclose(align(Y, X), X, atol=1e-12)  # heavy atoms define the fit, all atoms move
    # a mirror image: the best PROPER rotation, never a reflection
    R_m, _ = kabsch(X, Y * np.array([1.0, 1.0, -1.0]))
    assert abs(np.linalg.det(R_m) - 1.0) < 1e-12
    # batched
    Rb, _ = kabsch(np.stack([X, X]), np.stack([Y, X]))
    np.testing.assert_allclose(Rb[0], R0, atol=1e-12)
    np.testing.assert_allclose(Rb[1], np.eye(3), atol=1e-12)
    with pytest.raises(LatentgeoError):
        kabsch(X, Y[:5])


def test_builder_dihedrals_and_chirality():
    for phi, psi in ((-150.0, 160.0), (60.0, -40.0), (-80.0, 70.0)):
        X = build_coordinates(phi, psi)
        np.testing.assert_allclose(np.degrees(phi_psi(X)), [phi, psi], atol=1e-9)
        # L-alanine (CORN rule): seen from HA, CO -> R -> N runs clockwise
        n, ca, c, cb, ha = X[6], X[8], X[14], X[10], X[9]
        assert np.dot(np.cross(cb - c, n - c), ca - ha) > 0


def test_thp_rmsd_ets_on_hand_made_paths():
    target = build_coordinates(60.0, -40.0) / 10.0  # nm
    rng = np.random.default_rng(1)
    R = _rotation(rng)
    # final frames: the target rotated + shifted (hit, RMSD 0); 0.5 rad away in phi (hit); 0.8 rad away (miss)
    off_hit = build_coordinates(60.0 + np.degrees(0.5), -40.0) / 10.0
    off_miss = build_coordinates(60.0, -40.0 + np.degrees(0.8)) / 10.0
    finals = np.stack([target @ R.T + 0.3, off_hit, off_miss])
    np.testing.assert_array_equal(thp_hits(finals, target), [True, True, False])
    # RMSD closed form: heavy atoms scaled by (1 + eps) about their centroid -> identity rotation is optimal and
    # RMSD = eps * sqrt(mean |x - c|^2)
    eps = 0.05
    h = target[HEAVY_ATOMS]
    c = h.mean(0)
    scaled = target.copy()
    scaled[HEAVY_ATOMS] = c + (1 + eps) * (h - c)
    want = eps * np.sqrt(((h - c) ** 2).sum(-1).mean())
    np.testing.assert_allclose(rmsd_heavy(np.stack([target @ R.T, scaled]), target), [0.0, want], atol=1e-12)
    # ETS: max energy along each path minus the start energy, averaged over hitting paths
    T = 5
    pos = np.repeat(finals[:, None], T, axis=1)
    E = np.array([[0, 3, 10, 2, 1], [0, 7, 1, 1, 1], [50, 0, 0, 0, 0]], dtype=float) - 20.0
    m = path_metrics(pos, E, target, e_start=-20.0)
    assert m["thp"] == pytest.approx(2 / 3)
    assert m["ets_kj_mol"]["mean"] == pytest.approx(8.5)
    assert m["ets_kj_mol"]["std"] == pytest.approx(1.5)
    assert m["ets_all_paths_kj_mol"]["mean"] == pytest.approx(67 / 3)
    assert m["ets_absolute_kj_mol"]["mean"] == pytest.approx(-11.5)
    assert m["rmsd_final_angstrom"]["n"] == 3 and m["rmsd_per_path"][0] < 1e-10
    with pytest.raises(LatentgeoError):
        path_metrics(pos[:, :, :5], E, target, 0.0)


def test_restraint_kappas_closed_form():
    s = np.array([0.1, 0.5, 2.0])  # Angstrom
    k = restraint_kappas(s, 300.0, scale=0.5)
    np.testing.assert_allclose(k, 0.5 * KB_KJ_MOL_K * 300.0 / (s / 10.0) ** 2, rtol=1e-14)
    np.testing.assert_allclose(restraint_kappas(s, 300.0, cap=1000.0), np.minimum(k * 2, 1000.0), rtol=1e-14)
    np.testing.assert_array_equal(restraint_kappas(s, 300.0, cap=7.0, schedule="constant"), [7.0] * 3)
    with pytest.raises(LatentgeoError):
        restraint_kappas(s, 300.0, schedule="constant")
    # a floor raises the weak (high-sigma) tether, the cap still bounds the stiff end
    np.testing.assert_allclose(restraint_kappas(s, 300.0, cap=1e5, floor=500.0),
                               np.clip(k * 2, 500.0, 1e5), rtol=1e-14)
    assert restraint_kappas(s, 300.0, floor=500.0).min() == 500.0


def test_reparam_arclength_equal_spacing():
    # a hand-made curve [N, 22, 3] along a line with very uneven steps (one big jump, like the geodesic's posterior
    # means across the phi barrier), plus values (sigma) that are linear in the curve parameter
    rng = np.random.default_rng(3)
    d = rng.normal(size=(22, 3))
    t = np.array([0.0, 0.01, 0.02, 0.03, 0.9, 0.95, 1.0])
    pts = t[:, None, None] * d[None]
    sig = 0.1 + 2.0 * t
    new, s_new = reparam_arclength(pts, sig, n=11)
    gaps = np.linalg.norm(np.diff(new.reshape(11, -1), axis=0), axis=1)
    np.testing.assert_allclose(gaps, np.linalg.norm(d) / 10, rtol=0, atol=1e-9)
    np.testing.assert_allclose(new, np.linspace(0, 1, 11)[:, None, None] * d[None], atol=1e-12)
    np.testing.assert_allclose(s_new, 0.1 + 2.0 * np.linspace(0, 1, 11), atol=1e-12)
    # an L-shaped polyline: equal arc length along the polyline, ends kept, default n = N
    L = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 1.0]])
    out, none = reparam_arclength(L, n=5)
    assert none is None
    np.testing.assert_allclose(out, [[0, 0], [1, 0], [2, 0], [3, 0], [3, 1]], atol=1e-12)
    assert reparam_arclength(L)[0].shape == (3, 2)
    # a degenerate curve (all points equal) stays put
    np.testing.assert_array_equal(reparam_arclength(np.ones((4, 2)))[0], np.ones((4, 2)))
    with pytest.raises(LatentgeoError):
        reparam_arclength(L[:1])
    with pytest.raises(LatentgeoError):
        reparam_arclength(L, np.ones(2))


def _independent_energy(positions_nm):
    import openmm
    from openmm import app, unit

    from latentgeo.molecules.alanine_full import pdb_path

    pdb = app.PDBFile(str(pdb_path("c5")))
    system = app.ForceField("amber99sbildn.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                              constraints=app.HBonds)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    out = []
    for x in np.asarray(positions_nm, dtype=np.float64).reshape(-1, 22, 3):
        ctx.setPositions(x * unit.nanometer)
        out.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.array(out)


def test_shipped_pdb_energy_and_restraint_force():
    pytest.importorskip("openmm", reason="OpenMM is the optional 'molecules' extra")
    from openmm import app

    from latentgeo.molecules.alanine_full import AlanineFull, pdb_path

    sysm = AlanineFull()
    for state, basin in (("c5", (-2.57, 2.78)), ("c7ax", (1.05, -0.71))):
        x = np.asarray(app.PDBFile(str(pdb_path(state))).getPositions(asNumpy=True)._value)
        e = float(sysm.energy(x))
        assert e == pytest.approx(float(_independent_energy(x)[0]), abs=1e-6)
        assert -95.0 < e < -75.0  # a minimised structure (3-decimal PDB rounding adds a little)
        np.testing.assert_allclose(phi_psi(x), basin, atol=0.05)
    # the restraint (force group 1): energy 0.5 k |x - x0|^2 and force -k (x - x0), per atom
    rng = np.random.default_rng(2)
    x = sysm.pdb_positions
    c = x + 0.02 * rng.normal(size=x.shape)
    k = 1234.5
    sysm.set_positions(x)
    sysm.set_restraint(c, k)
    np.testing.assert_allclose(sysm.forces(groups={1}), -k * (x - c), rtol=1e-9, atol=1e-9)
    assert float(sysm.energy(groups={1})) == pytest.approx(0.5 * k * ((x - c) ** 2).sum(), rel=1e-10)
    sysm.set_restraint(None, 0.0)
    assert float(sysm.energy(groups={1})) == 0.0
    # heavy atoms only: hydrogens feel nothing
    heavy = AlanineFull(restrain="heavy")
    heavy.set_positions(x)
    heavy.set_restraint(c, k)
    w = np.zeros((22, 1))
    w[HEAVY_ATOMS] = 1.0
    np.testing.assert_allclose(heavy.forces(groups={1}), -k * w * (x - c), rtol=1e-9, atol=1e-9)


def test_cli_two_tiny_paths(tmp_path):
    pytest.importorskip("openmm", reason="OpenMM is the optional 'molecules' extra")
    from latentgeo.cli import main

    out = tmp_path / "ala"
    main(["tps", "alanine-full", "--paths", "2", "--out", str(out), "--quick", "--n-points", "10", "--k-steps", "3",
          "--data-frames", "100", "--committor-frames", "1"])
    s = json.loads((out / "summary.json").read_text())
    for k in ("thp", "rmsd_final_angstrom", "ets_kj_mol", "force_evaluations", "seconds", "platform", "committor"):
        assert k in s
    d = np.load(out / "paths.npz")
    pos, en = d["positions"], d["energies"]
    assert pos.shape == (2, 30, 22, 3) and en.shape == (2, 30)
    # the stored energies are OpenMM's energies of the stored positions (fresh, independent context)
    np.testing.assert_allclose(_independent_energy(pos), en.reshape(-1), atol=0.1)
    assert s["energy_recheck_max_abs_kj_mol"] < 0.1
    # every MD step counted: data runs (2 x 300 K + hot) of frames * stride plus equilibration; sampling P * N * K
    fe = s["force_evaluations"]
    assert fe["sampling"] == 2 * 10 * 3
    assert fe["data"] == 3 * (100 * 20 + 20 * 20)
    m = path_metrics(pos, en, _target_from(out), s["e_start_kj_mol"])
    assert m["thp"] == s["thp"]
    assert m["rmsd_final_angstrom"]["mean"] == pytest.approx(s["rmsd_final_angstrom"]["mean"], abs=1e-5)
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "<table" in (out / "report.html").read_text()


def _target_from(out):
    """The minimised target in the run's frame, rebuilt from the run folder: aligned onto topology.pdb."""
    from openmm import app

    from latentgeo.molecules.alanine_full import AlanineFull, pdb_path

    sysm = AlanineFull()
    start = np.asarray(app.PDBFile(str(out / "topology.pdb")).getPositions(asNumpy=True)._value)
    tgt = sysm.minimize(np.asarray(app.PDBFile(str(pdb_path("c7ax"))).getPositions(asNumpy=True)._value))
    return align(tgt, start)


def test_cli_bad_alanine_full_inputs(tmp_path, capsys):
    from latentgeo.cli import main

    for argv, msg in ((["--anneal", "constant"], "--kappa-cap"), (["--denoiser", "kde"], "--denoiser kde"),
                      (["--kappa-scale", "0"], "--kappa-scale"), (["--timestep-fs", "9"], "--timestep-fs"),
                      (["--platform", "CUDA"], "--platform"), (["--scheme", "lm"], "--scheme"),
                      (["--restrain", "side-chain"], "--restrain"), (["--centres", "x"], "--centres"),
                      (["--reparam", "fisher"], "--reparam"), (["--kappa-floor", "-1"], "--kappa-floor")):
        with pytest.raises(SystemExit) as e:
            main(["tps", "alanine-full", "--out", str(tmp_path / "x")] + argv)
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
