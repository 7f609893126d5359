"""Full-atom alanine dipeptide (22 atoms, vacuum, amber99sb-ildn) transition paths with OpenMM (issue 20).

Pipeline of :func:`run_alanine_full` (the ``latentgeo tps alanine-full`` command):

1. Boltzmann data: Langevin MD (``LangevinMiddleIntegrator``, NoCutoff, H-bond constraints) at 300 K from the
   C5 and the C7ax minimum, plus one hotter run (``data_hot_k``, default 800 K) that crosses the phi barrier and
   covers the transition region. Every MD step is one force evaluation and is counted. Frames are Kabsch-aligned
   (heavy atoms, float64) to the reference frame (the minimised start structure, heavy-atom centroid at 0).
2. An EDM denoiser (MLP, :func:`latentgeo.diffusion.fit_denoiser`) of the aligned 66-D coordinates in Angstrom;
   its quality: Ramachandran histogram of its samples against the MD data (total-variation distance) and the
   error of its bond lengths.
3. The spacetime geodesic (:func:`latentgeo.molecules.tps.tps_geodesic`) between ``(x_start, sigma_end)`` and
   ``(x_target, sigma_end)``; then steered MD natively in OpenMM: at every curve point ``n`` a
   ``CustomExternalForce`` ``0.5 k (|r_i - r_i^n|^2)`` on every atom gets the centres ``x_n`` (Angstrom -> nm) and
   the stiffness ``k_n = min(cap, scale * kT / sigma_n^2)`` (``sigma_n`` in nm, so ``k`` in kJ/mol/nm^2) through
   ``updateParametersInContext`` and the integrator takes ``K`` steps. ``kT / sigma^2`` is the posterior's tether
   ``|x - x_n|^2 / (2 sigma_n^2)`` in units of kT.
4. Baselines with the same output format: the same restraint schedule along the straight line in aligned Cartesian
   space, and a two-way shooting TPS Monte Carlo whose first shots start at the highest-energy frames of the
   transition segments (frames in neither end state) of the first 8 geodesic paths.
5. Committor of the highest-energy frame of a few paths (fraction of short unbiased trajectories that reach C7ax).

Metrics (the TPS-DPS protocol, sjeong9760/tps-dps): THP = fraction of paths whose final (phi, psi) lies within
0.75 rad (Euclidean, wrapped differences) of the target's; RMSD of the final frame's heavy atoms to the target after
Kabsch alignment (Angstrom); ETS = highest potential energy along a path (every recorded MD state) minus the energy
of the minimised start structure, averaged over the paths that hit the target (TPS-DPS averages the raw potential
over hitting paths; ``ets_absolute_kj_mol`` reports that too, on our NoCutoff system).
"""
from __future__ import annotations

import base64
import io
import json
import math
import platform as _platform
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from latentgeo.errors import LatentgeoError, check_choice, check_positive

__all__ = ["ATOM_NAMES", "HEAVY_ATOMS", "PHI_ATOMS", "PSI_ATOMS", "TPSDPS_PHI_ATOMS", "KB_KJ_MOL_K", "pdb_path",
           "build_coordinates", "kabsch", "align", "dihedrals", "phi_psi", "thp_hits", "rmsd_heavy", "path_metrics",
           "AlanineFull", "restraint_kappas", "reparam_arclength", "run_alanine_full", "ALANINE_FULL_DEFAULTS"]

_HINT = "install the optional extra with: pip install 'latentgeo[molecules]' (OpenMM)"

#: 22 atoms (residue, name) in the order of the shipped PDB (that of openmmtools' alanine dipeptide).
ATOM_NAMES = [("ACE", "HH31"), ("ACE", "CH3"), ("ACE", "HH32"), ("ACE", "HH33"), ("ACE", "C"), ("ACE", "O"),
              ("ALA", "N"), ("ALA", "H"), ("ALA", "CA"), ("ALA", "HA"), ("ALA", "CB"), ("ALA", "HB1"),
              ("ALA", "HB2"), ("ALA", "HB3"), ("ALA", "C"), ("ALA", "O"),
              ("NME", "N"), ("NME", "H"), ("NME", "C"), ("NME", "H1"), ("NME", "H2"), ("NME", "H3")]
HEAVY_ATOMS = np.array([i for i, (_, n) in enumerate(ATOM_NAMES) if not n.startswith("H")])
PHI_ATOMS = (4, 6, 8, 14)        # C(ACE) - N - CA - C
PSI_ATOMS = (6, 8, 14, 16)       # N - CA - C - N(NME)
TPSDPS_PHI_ATOMS = (1, 6, 8, 14)  # the pseudo-dihedral tps-dps calls phi (CH3(ACE) - N - CA - C)
KB_KJ_MOL_K = 0.00831446261815324  # Boltzmann constant, kJ/mol/K
STATES = ("c5", "c7ax")
THP_RADIUS = 0.75

ALANINE_FULL_DEFAULTS: Dict[str, Any] = dict(
    temperature=300.0, timestep_fs=1.0, friction_per_ps=1.0, data_frames=4000, data_stride=50,
    data_hot_k=800.0, train_steps=4000, hidden=128, depth=3, log_snr=4.0, n_points=50, n_nodes=10,
    geo_steps=500, geo_lr=0.1, k_steps=20, kappa_scale=1.0, kappa_cap=20000.0, schedule="geodesic",
    snr_penalty=0.0, snr_lambda=3.0, objective="abs", shooting_paths=None, committor_frames=4,
    committor_shots=20, committor_steps=500, platform="Reference", restrain="all", centres="curve",
    reparam="none", kappa_floor=None)

QUICK = dict(data_frames=300, data_stride=20, train_steps=200, hidden=64, depth=2, n_points=20, geo_steps=20,
             k_steps=5, committor_frames=1, committor_shots=4, committor_steps=100)


def _require():
    try:
        import openmm  # noqa: F401
        import openmm.app  # noqa: F401
    except ImportError as exc:
        raise LatentgeoError(f"full-atom alanine needs OpenMM ({exc.name or exc} is missing); {_HINT}")


def pdb_path(state: str = "c5") -> Path:
    """The shipped PDB of the minimised ``state`` ("c5" start, "c7ax" target)."""
    if state not in STATES:
        raise LatentgeoError(f"state must be one of {', '.join(STATES)}, got {state!r}; pass 'c5' or 'c7ax'")
    return Path(__file__).resolve().parent.parent / "data" / "molecules" / f"alanine_dipeptide_{state}.pdb"


# ----------------------------------------------------------------------------------------------------- geometry

def _place(a, b, c, bond, angle_deg, dihedral_deg):
    """Atom d with |cd| = bond, angle bcd, dihedral abcd (natural extension reference frame)."""
    ang, dih = math.radians(angle_deg), math.radians(dihedral_deg)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    return c - bond * math.cos(ang) * bc + bond * math.sin(ang) * (math.cos(dih) * m + math.sin(dih) * n)


def build_coordinates(phi_deg: float, psi_deg: float) -> np.ndarray:
    """Idealised L-alanine dipeptide ``[22, 3]`` in Angstrom (standard bond lengths/angles, trans peptides) with
    backbone dihedrals ``phi, psi`` (degrees); how the shipped PDBs were made (then energy-minimised)."""
    X = np.zeros((22, 3))
    X[4] = [1.522, 0, 0]
    a = math.radians(116.6)
    X[6] = X[4] + 1.335 * np.array([-math.cos(a), math.sin(a), 0.0])
    X[8] = _place(X[1], X[4], X[6], 1.449, 121.9, 180)
    X[14] = _place(X[4], X[6], X[8], 1.522, 111.1, phi_deg)
    X[16] = _place(X[6], X[8], X[14], 1.335, 116.2, psi_deg)
    X[18] = _place(X[8], X[14], X[16], 1.449, 121.9, 180)
    X[5] = _place(X[8], X[6], X[4], 1.229, 122.9, 0)
    X[7] = _place(X[1], X[4], X[6], 1.01, 119.8, 0)
    X[15] = _place(X[18], X[16], X[14], 1.229, 122.9, 0)
    X[17] = _place(X[8], X[14], X[16], 1.01, 119.8, 0)
    X[9] = _place(X[4], X[6], X[8], 1.09, 109.5, phi_deg + 120)   # L: CO, R, N clockwise seen from HA
    X[10] = _place(X[4], X[6], X[8], 1.53, 110.5, phi_deg - 120)
    for i, d in zip((11, 12, 13), (60, 180, -60)):
        X[i] = _place(X[6], X[8], X[10], 1.09, 109.5, d)
    for i, d in zip((0, 2, 3), (180, 60, -60)):
        X[i] = _place(X[6], X[4], X[1], 1.09, 109.5, d)
    for i, d in zip((19, 20, 21), (180, 60, -60)):
        X[i] = _place(X[14], X[16], X[18], 1.09, 109.5, d)
    return X


def pdb_text(X_angstrom: np.ndarray, remark: str = "") -> str:
    lines = [f"REMARK   1 {remark}"] if remark else []
    rid = {"ACE": 1, "ALA": 2, "NME": 3}
    for i, ((res, nm), x) in enumerate(zip(ATOM_NAMES, np.asarray(X_angstrom, dtype=np.float64))):
        name = nm if len(nm) == 4 else " " + nm
        lines.append("ATOM  %5d %-4s %3s A%4d    %8.3f%8.3f%8.3f  1.00  0.00          %2s"
                     % (i + 1, name, res, rid[res], x[0], x[1], x[2], nm[0]))
    return "\n".join(lines) + "\nEND\n"


def kabsch(P: np.ndarray, Q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rotation ``R`` and translation ``t`` minimising ``|P R^T + t - Q|`` (proper rotation, float64).

    ``P``, ``Q``: ``[..., n, 3]`` (batched over leading axes). Returns ``R [..., 3, 3]``, ``t [..., 1, 3]``.
    """
    P = np.asarray(P, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    if P.shape[-1] != 3 or P.shape[-2:] != Q.shape[-2:]:
        raise LatentgeoError(f"kabsch needs [..., n, 3] point sets of one shape, got {P.shape} and {Q.shape}; "
                             "pass two arrays of the same [..., n, 3] shape")
    cp, cq = P.mean(-2, keepdims=True), Q.mean(-2, keepdims=True)
    H = np.swapaxes(P - cp, -1, -2) @ (Q - cq)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.swapaxes(Vt, -1, -2) @ np.swapaxes(U, -1, -2)))
    D = np.zeros(d.shape + (3, 3))
    D[..., 0, 0] = 1.0
    D[..., 1, 1] = 1.0
    D[..., 2, 2] = np.where(d == 0, 1.0, d)
    R = np.swapaxes(Vt, -1, -2) @ D @ np.swapaxes(U, -1, -2)
    t = cq - cp @ np.swapaxes(R, -1, -2)
    return R, t


def align(X: np.ndarray, ref: np.ndarray, atoms: Optional[Sequence[int]] = HEAVY_ATOMS) -> np.ndarray:
    """Frames ``X [..., 22, 3]`` rotated and translated onto ``ref [22, 3]`` by Kabsch on ``atoms`` (all atoms if
    None)."""
    X = np.asarray(X, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    idx = slice(None) if atoms is None else np.asarray(atoms)
    R, t = kabsch(X[..., idx, :], np.broadcast_to(ref[idx], X[..., idx, :].shape))
    return X @ np.swapaxes(R, -1, -2) + t


def dihedrals(X: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    """Dihedral angle (radians, [-pi, pi]) of atoms ``idx`` in frames ``X [..., n, 3]`` (IUPAC sign)."""
    X = np.asarray(X, dtype=np.float64)
    p0, p1, p2, p3 = (X[..., i, :] for i in idx)
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1n).sum(-1, keepdims=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdims=True) * b1n
    x = (v * w).sum(-1)
    y = (np.cross(b1n, v) * w).sum(-1)
    return np.arctan2(y, x)


def phi_psi(X: np.ndarray, phi_atoms: Sequence[int] = PHI_ATOMS) -> np.ndarray:
    """``[..., 2]`` backbone (phi, psi) in radians."""
    return np.stack([dihedrals(X, phi_atoms), dihedrals(X, PSI_ATOMS)], -1)


def _wrap(a):
    return np.mod(np.asarray(a) + np.pi, 2 * np.pi) - np.pi


def thp_hits(final: np.ndarray, target: np.ndarray, radius: float = THP_RADIUS,
             phi_atoms: Sequence[int] = PHI_ATOMS) -> np.ndarray:
    """``[P]`` bool: the final frame's (phi, psi) lies within ``radius`` rad (wrapped, Euclidean) of the target's."""
    d = _wrap(phi_psi(final, phi_atoms) - phi_psi(np.asarray(target)[None], phi_atoms))
    return np.sqrt((d ** 2).sum(-1)) < radius


def rmsd_heavy(final: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[P]`` heavy-atom RMSD after Kabsch alignment, in the input's length unit."""
    final = np.asarray(final, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)[HEAVY_ATOMS]
    fa = align(final[..., HEAVY_ATOMS, :], tgt, atoms=None)
    return np.sqrt(((fa - tgt) ** 2).sum(-1).mean(-1))


def _ms(v) -> Dict[str, Optional[float]]:
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def path_metrics(positions_nm: np.ndarray, energies: np.ndarray, target_nm: np.ndarray, e_start: float
                 ) -> Dict[str, Any]:
    """THP, final heavy-atom RMSD (Angstrom) and ETS of paths ``[P, T, 22, 3]`` (nm) with energies ``[P, T]``.

    ETS of a path = ``max_t energies[p, t] - e_start``; ``ets_kj_mol`` averages over the paths that hit the target
    (as TPS-DPS), ``ets_all_paths_kj_mol`` over all paths; ``ets_absolute_kj_mol`` is the raw maximum (no
    reference energy) over hitting paths. Standard deviations are population ones (ddof = 0).
    """
    pos = np.asarray(positions_nm, dtype=np.float64)
    E = np.asarray(energies, dtype=np.float64)
    if pos.ndim != 4 or pos.shape[2:] != (22, 3) or E.shape != pos.shape[:2]:
        raise LatentgeoError(f"paths must be positions [P, T, 22, 3] and energies [P, T], got {pos.shape} and "
                             f"{E.shape}; pass one energy per stored frame")
    final = pos[:, -1]
    hit = thp_hits(final, target_nm)
    hit_tpsdps = thp_hits(final, target_nm, phi_atoms=TPSDPS_PHI_ATOMS)
    rmsd = 10.0 * rmsd_heavy(final, target_nm)
    emax = E.max(1)
    ets = emax - float(e_start)
    return {"n_paths": int(pos.shape[0]), "frames_per_path": int(pos.shape[1]),
            "thp": float(hit.mean()), "thp_tpsdps_phi_atoms": float(hit_tpsdps.mean()),
            "rmsd_final_angstrom": _ms(rmsd), "ets_kj_mol": _ms(ets[hit]), "ets_all_paths_kj_mol": _ms(ets),
            "ets_absolute_kj_mol": _ms(emax[hit]), "hit": hit.tolist(), "rmsd_per_path": rmsd.tolist(),
            "ets_per_path": ets.tolist()}


def restraint_kappas(sigmas_angstrom: np.ndarray, temperature: float, scale: float = 1.0,
                     cap: Optional[float] = None, schedule: str = "geodesic",
                     floor: Optional[float] = None) -> np.ndarray:
    """Restraint stiffness ``[N]`` in kJ/mol/nm^2 for model noise levels ``sigma_n`` in Angstrom.

    ``"geodesic"``: ``k_n = scale * kB T / (sigma_n / 10)^2`` (the posterior tether ``|x - x_n|^2 / (2 sigma_n^2)``
    at temperature T, lengths converted Angstrom -> nm), capped at ``cap`` and raised to ``floor`` where weaker
    (so the tether is not weak mid-curve); ``"constant"``: ``k_n = cap``.
    """
    s = np.asarray(sigmas_angstrom, dtype=np.float64)
    if schedule not in ("geodesic", "constant"):
        raise LatentgeoError(f"schedule must be 'geodesic' or 'constant', got {schedule!r}; pick one of the two")
    if schedule == "constant":
        if cap is None:
            raise LatentgeoError("schedule 'constant' needs a cap (the constant stiffness); pass --kappa-cap")
        return np.full(s.shape, float(cap))
    k = scale * KB_KJ_MOL_K * temperature / (s / 10.0) ** 2
    if floor is not None:
        k = np.maximum(k, float(floor))
    return np.minimum(k, cap) if cap is not None else k


def reparam_arclength(points: np.ndarray, values: Optional[np.ndarray] = None, n: Optional[int] = None
                      ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Resample the polyline through ``points [N, ...]`` at ``n`` (default N) points equally spaced in Euclidean
    arc length (all trailing axes flattened), keeping both ends; ``values [N, ...]`` (e.g. the noise levels
    ``sigma_n``) are interpolated at the same curve parameters. Consecutive output points are equally far apart
    along the polyline (and exactly so in straight distance where no output segment spans a corner).
    Returns ``(points [n, ...], values [n, ...] or None)``."""
    P = np.asarray(points, dtype=np.float64)
    if P.ndim < 1 or P.shape[0] < 2:
        raise LatentgeoError(f"reparam_arclength needs at least 2 points, got shape {P.shape}; pass a curve [N, ...]")
    n = P.shape[0] if n is None else int(n)
    if n < 2:
        raise LatentgeoError(f"reparam_arclength needs n >= 2 output points, got {n}; pass n >= 2")
    flat = P.reshape(P.shape[0], -1)
    seg = np.linalg.norm(np.diff(flat, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    V = None if values is None else np.asarray(values, dtype=np.float64)
    if V is not None and V.shape[0] != P.shape[0]:
        raise LatentgeoError(f"values have {V.shape[0]} rows for {P.shape[0]} points; pass one value per point")
    if s[-1] <= 0.0:
        idx = np.zeros(n, dtype=np.int64)
        return P[idx].copy(), (None if V is None else V[idx].copy())
    want = np.linspace(0.0, s[-1], n)
    j = np.clip(np.searchsorted(s, want, side="right") - 1, 0, len(seg) - 1)
    # zero-length segments never receive a target strictly inside them; guard the division anyway
    w = np.where(seg[j] > 0, (want - s[j]) / np.where(seg[j] > 0, seg[j], 1.0), 0.0)
    out = (1 - w)[:, None] * flat[j] + w[:, None] * flat[j + 1]
    out[0], out[-1] = flat[0], flat[-1]
    vout = None
    if V is not None:
        vf = V.reshape(V.shape[0], -1)
        vout = ((1 - w)[:, None] * vf[j] + w[:, None] * vf[j + 1]).reshape((n,) + V.shape[1:])
        vout[0], vout[-1] = V[0], V[-1]
    return out.reshape((n,) + P.shape[1:]), vout


# ----------------------------------------------------------------------------------------------------- OpenMM

class AlanineFull:
    """OpenMM alanine dipeptide in vacuum (amber99sbildn.xml, NoCutoff, HBonds) with a harmonic restraint.

    Force group 0: the force field; group 1: ``CustomExternalForce`` ``0.5 * k * w * ((x-x0)^2 + (y-y0)^2 +
    (z-z0)^2)``, global ``k`` (kJ/mol/nm^2, 0 = off), per-particle centres ``x0, y0, z0`` (nm) and weight ``w``
    (1 on every atom with ``restrain="all"``, on heavy atoms only with ``"heavy"``).
    ``force_evaluations`` counts every integrator step, every energy evaluation and (as an upper bound) every
    minimiser iteration.
    """

    def __init__(self, temperature: float = 300.0, timestep_fs: float = 1.0, friction_per_ps: float = 1.0,
                 platform: str = "Reference", seed: int = 0, restrain: str = "all"):
        _require()
        import openmm
        from openmm import app, unit

        self.temperature = float(temperature)
        self.timestep_fs = float(timestep_fs)
        self.friction_per_ps = float(friction_per_ps)
        pdb = app.PDBFile(str(pdb_path("c5")))
        self.topology = pdb.topology
        names = [(a.residue.name, a.name) for a in pdb.topology.atoms()]
        if len(names) != 22:
            raise LatentgeoError(f"the shipped PDB has {len(names)} atoms, not 22; reinstall latentgeo")
        ff = app.ForceField("amber99sbildn.xml")
        self.system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
        for f in self.system.getForces():
            f.setForceGroup(0)
        if restrain not in ("all", "heavy"):
            raise LatentgeoError(f"restrain must be 'all' or 'heavy', got {restrain!r}; pick one of the two")
        self.restrain = restrain
        heavy = set(HEAVY_ATOMS.tolist())
        self.restraint_weights = np.array([1.0 if (restrain == "all" or i in heavy) else 0.0 for i in range(22)])
        rest = openmm.CustomExternalForce("0.5*k_restraint*w*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        rest.addGlobalParameter("k_restraint", 0.0)
        for p in ("x0", "y0", "z0", "w"):
            rest.addPerParticleParameter(p)
        for i in range(22):
            rest.addParticle(i, [0.0, 0.0, 0.0, float(self.restraint_weights[i])])
        rest.setForceGroup(1)
        self.system.addForce(rest)
        self.restraint = rest
        self.integrator = openmm.LangevinMiddleIntegrator(self.temperature * unit.kelvin,
                                                          self.friction_per_ps / unit.picosecond,
                                                          self.timestep_fs * unit.femtoseconds)
        self.integrator.setRandomNumberSeed(int(seed) % 2_000_000_000 + 1)
        try:
            plat = openmm.Platform.getPlatformByName(platform)
        except Exception:  # OpenMMException
            raise LatentgeoError(f"OpenMM platform '{platform}' is not available; use 'Reference' or 'CPU'")
        props = {"Threads": "1"} if platform == "CPU" else {}
        self.context = openmm.Context(self.system, self.integrator, plat, props)
        self.platform = plat.getName()
        self.masses = np.array([self.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(22)])
        self.force_evaluations = 0
        self._unit = unit
        self.pdb_positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))

    @property
    def kT(self) -> float:
        return KB_KJ_MOL_K * self.temperature

    # state
    def set_positions(self, X_nm: np.ndarray) -> None:
        self.context.setPositions(np.asarray(X_nm, dtype=np.float64) * self._unit.nanometer)

    def positions(self) -> np.ndarray:
        st = self.context.getState(getPositions=True)
        return np.asarray(st.getPositions(asNumpy=True).value_in_unit(self._unit.nanometer))

    def set_restraint(self, centres_nm: Optional[np.ndarray], k: float) -> None:
        """Centres ``[22, 3]`` nm (None keeps the old ones) and stiffness ``k`` kJ/mol/nm^2 (0 switches it off)."""
        if centres_nm is not None:
            c = np.asarray(centres_nm, dtype=np.float64)
            for i in range(22):
                self.restraint.setParticleParameters(i, i, [float(c[i, 0]), float(c[i, 1]), float(c[i, 2]),
                                                            float(self.restraint_weights[i])])
            self.restraint.updateParametersInContext(self.context)
        self.context.setParameter("k_restraint", float(k))

    def set_temperature(self, temperature: float) -> None:
        self.integrator.setTemperature(float(temperature) * self._unit.kelvin)

    def energy(self, X_nm: Optional[np.ndarray] = None, groups=frozenset({0})) -> np.ndarray:
        """Potential energy (kJ/mol) of the current state or of frames ``[..., 22, 3]`` (force field only by
        default; ``groups={1}`` the restraint). Counted."""
        if X_nm is None:
            self.force_evaluations += 1
            st = self.context.getState(getEnergy=True, groups=set(groups))
            return np.float64(st.getPotentialEnergy().value_in_unit(self._unit.kilojoule_per_mole))
        X = np.asarray(X_nm, dtype=np.float64)
        flat = X.reshape(-1, 22, 3)
        keep = self.positions()
        out = np.empty(flat.shape[0])
        for i, x in enumerate(flat):
            self.set_positions(x)
            self.force_evaluations += 1
            st = self.context.getState(getEnergy=True, groups=set(groups))
            out[i] = st.getPotentialEnergy().value_in_unit(self._unit.kilojoule_per_mole)
        self.set_positions(keep)
        return out.reshape(X.shape[:-2])

    def forces(self, groups=frozenset({0, 1})) -> np.ndarray:
        """Forces (kJ/mol/nm) ``[22, 3]`` of the current state (counted)."""
        self.force_evaluations += 1
        st = self.context.getState(getForces=True, groups=set(groups))
        return np.asarray(st.getForces(asNumpy=True).value_in_unit(self._unit.kilojoule_per_mole /
                                                                   self._unit.nanometer))

    def minimize(self, X_nm: np.ndarray, max_iterations: int = 1000, tolerance: float = 1e-3) -> np.ndarray:
        """Local energy minimum (restraint off) from ``X_nm``; counts ``max_iterations`` (upper bound)."""
        import openmm

        self.set_restraint(None, 0.0)
        self.set_positions(X_nm)
        self.context.applyConstraints(1e-10)
        openmm.LocalEnergyMinimizer.minimize(self.context, tolerance, int(max_iterations))
        self.force_evaluations += int(max_iterations)
        return self.positions()

    def thermalise(self, seed: int) -> None:
        self.context.setVelocitiesToTemperature(self.temperature * self._unit.kelvin, int(seed) % 2_000_000_000 + 1)
        self.integrator.setRandomNumberSeed(int(seed) % 2_000_000_000 + 1)

    def step(self, n: int) -> None:
        self.integrator.step(int(n))
        self.force_evaluations += int(n)

    def run_frames(self, n_frames: int, stride: int, with_energy: bool = False):
        """``n_frames`` frames every ``stride`` steps from the current state: positions ``[F, 22, 3]`` nm (and
        energies ``[F]`` of the force field)."""
        pos = np.empty((n_frames, 22, 3))
        en = np.empty(n_frames)
        for f in range(n_frames):
            self.step(stride)
            st = self.context.getState(getPositions=True, getEnergy=with_energy, groups={0})
            pos[f] = st.getPositions(asNumpy=True).value_in_unit(self._unit.nanometer)
            if with_energy:
                self.force_evaluations += 1
                en[f] = st.getPotentialEnergy().value_in_unit(self._unit.kilojoule_per_mole)
        return (pos, en) if with_energy else pos

    def steered(self, x0_nm: np.ndarray, centres_nm: np.ndarray, kappas: np.ndarray, k_steps: int, seed: int):
        """Steered MD: from ``x0_nm`` (fresh Maxwell-Boltzmann velocities), at every curve point ``n`` the
        restraint moves to ``centres_nm[n]`` with stiffness ``kappas[n]`` and the integrator takes ``k_steps``
        steps; every MD state is recorded. Returns positions ``[N * K, 22, 3]`` (nm) and force-field energies
        ``[N * K]`` (kJ/mol) of those states."""
        N = centres_nm.shape[0]
        self.set_restraint(None, 0.0)
        self.set_positions(x0_nm)
        self.context.applyConstraints(1e-10)
        self.thermalise(seed)
        pos = np.empty((N * k_steps, 22, 3))
        en = np.empty(N * k_steps)
        u = self._unit
        j = 0
        for n in range(N):
            self.set_restraint(centres_nm[n], float(kappas[n]))
            for _ in range(k_steps):
                self.step(1)
                st = self.context.getState(getPositions=True, getEnergy=True, groups={0})
                self.force_evaluations += 1  # the energy of the recorded state (scoring)
                pos[j] = st.getPositions(asNumpy=True).value_in_unit(u.nanometer)
                en[j] = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
                j += 1
        self.set_restraint(None, 0.0)
        return pos, en

    def free(self, x_nm: np.ndarray, n_steps: int, seed: int, reverse_from: Optional[np.ndarray] = None,
             velocities: Optional[np.ndarray] = None):
        """Unbiased MD of ``n_steps`` from ``x_nm`` with the given (or fresh) velocities; every state recorded.
        Returns positions ``[n_steps, 22, 3]``, energies ``[n_steps]`` and the initial velocities used."""
        u = self._unit
        self.set_restraint(None, 0.0)
        self.set_positions(x_nm)
        if velocities is None:
            self.thermalise(seed)
        else:
            self.integrator.setRandomNumberSeed(int(seed) % 2_000_000_000 + 1)
            self.context.setVelocities(np.asarray(velocities) * u.nanometer / u.picosecond)
        v0 = np.asarray(self.context.getState(getVelocities=True).getVelocities(asNumpy=True)
                        .value_in_unit(u.nanometer / u.picosecond))
        pos = np.empty((n_steps, 22, 3))
        en = np.empty(n_steps)
        for j in range(n_steps):
            self.step(1)
            st = self.context.getState(getPositions=True, getEnergy=True, groups={0})
            self.force_evaluations += 1
            pos[j] = st.getPositions(asNumpy=True).value_in_unit(u.nanometer)
            en[j] = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        return pos, en, v0


# ----------------------------------------------------------------------------------------------------- pipeline

def _in_a(pp: np.ndarray) -> np.ndarray:
    """Start basin (C5 / C7eq, extended): wrapped phi < -1.0 rad or phi > 2.6 rad (the C5 basin wraps)."""
    phi = _wrap(pp[..., 0])
    return (phi < -1.0) | (phi > 2.6)


def _in_b(pp: np.ndarray, target_pp: np.ndarray) -> np.ndarray:
    d = _wrap(pp - target_pp)
    return np.sqrt((d ** 2).sum(-1)) < THP_RADIUS


def _bonds(topology) -> np.ndarray:
    return np.array([(b[0].index, b[1].index) for b in topology.bonds()], dtype=np.int64)


def _rama_tv(a: np.ndarray, b: np.ndarray, bins: int = 24) -> float:
    """Total-variation distance between the (phi, psi) histograms (``bins`` x ``bins`` on [-pi, pi)^2)."""
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    ha = np.histogram2d(_wrap(a[:, 0]), _wrap(a[:, 1]), bins=[edges, edges])[0]
    hb = np.histogram2d(_wrap(b[:, 0]), _wrap(b[:, 1]), bins=[edges, edges])[0]
    return float(0.5 * np.abs(ha / ha.sum() - hb / hb.sum()).sum())


def _check_settings(n_paths, kw):
    def pos_int(name, lo=1):
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise LatentgeoError(f"{name} must be an integer >= {lo}, got {v!r}; pass a whole number >= {lo}")

    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 1:
        raise LatentgeoError(f"--paths must be a positive integer, got {n_paths!r}; pass e.g. --paths 64")
    for nm in ("data_frames", "data_stride", "train_steps", "hidden", "depth", "n_nodes", "k_steps",
               "committor_shots", "committor_steps"):
        pos_int(nm)
    pos_int("n_points", 2)
    pos_int("geo_steps", 0)
    pos_int("committor_frames", 0)
    if kw["shooting_paths"] is not None:
        pos_int("shooting_paths", 0)
    for nm in ("temperature", "timestep_fs", "friction_per_ps", "geo_lr", "kappa_scale"):
        check_positive(kw[nm], nm)
    if kw["timestep_fs"] > 4:
        raise LatentgeoError(f"timestep_fs {kw['timestep_fs']} is too large for H-bond constraints; use <= 4 fs "
                             "(the protocol uses 1)")
    hot = kw["data_hot_k"]
    if hot is not None and not (isinstance(hot, (int, float)) and math.isfinite(hot) and hot >= 0):
        raise LatentgeoError(f"data_hot_k must be >= 0 Kelvin, got {hot!r}; pass e.g. 800, or 0 for no hot run")
    cap = kw["kappa_cap"]
    if cap is not None and not (isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0):
        raise LatentgeoError(f"kappa_cap must be a positive number of kJ/mol/nm^2, got {cap!r}; pass e.g. 20000")
    for nm, choices in (("schedule", ("geodesic", "constant")), ("objective", ("abs", "relu")),
                        ("centres", ("curve", "denoised")), ("restrain", ("all", "heavy")),
                        ("reparam", ("none", "arclength")), ("platform", ("Reference", "CPU"))):
        check_choice(kw[nm], choices, nm)
    if kw["schedule"] == "constant" and cap is None:
        raise LatentgeoError("schedule 'constant' has no stiffness; pass --kappa-cap (the constant stiffness)")
    fl = kw["kappa_floor"]
    if fl is not None and not (isinstance(fl, (int, float)) and math.isfinite(fl) and fl > 0):
        raise LatentgeoError(f"kappa_floor must be a positive number of kJ/mol/nm^2, got {fl!r}; pass e.g. 2000")
    for nm in ("log_snr", "snr_penalty", "snr_lambda"):
        if not (isinstance(kw[nm], (int, float)) and math.isfinite(kw[nm])):
            raise LatentgeoError(f"{nm} must be a finite number, got {kw[nm]!r}; pass a finite value")
    frames = n_paths * kw["n_points"] * kw["k_steps"]
    if frames * 22 * 3 * 4 > 2 * 1024 ** 3:
        raise LatentgeoError(f"{frames:,} recorded MD states would need more than 2 GiB in paths.npz; use fewer "
                             "paths, points or steps per point")


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _sample_paths(sysm: AlanineFull, x0_nm, centres_nm, kappas, k_steps, n_paths, seed, say, label):
    P, T = n_paths, centres_nm.shape[0] * k_steps
    pos = np.empty((P, T, 22, 3), dtype=np.float32)
    en = np.empty((P, T))
    for p in range(P):
        x, e = sysm.steered(x0_nm, centres_nm, kappas, k_steps, seed=seed * 1_000_003 + p)
        pos[p], en[p] = x, e
        if (p + 1) % max(1, P // 4) == 0:
            say(f"{label}: {p + 1}/{P} paths")
    return pos, en


def _two_way_shooting(sysm: AlanineFull, seed_paths: np.ndarray, seed_energies: np.ndarray, target_pp,
                      n_paths: int, T: int, seed: int, burn_in: int = 16, max_init: int = 100):
    """Fixed-length (T) two-way shooting TPS Monte Carlo with Langevin dynamics.

    Initial path: shots from the frames of the transition segments of ``seed_paths`` ``[S, T', 22, 3]`` (frames in
    neither end state), highest energy first, one shot per frame, at most ``max_init`` shots, until one is
    reactive. Then shooting points uniform over the current path's frames, fresh Maxwell-Boltzmann velocities, half
    the steps forward and half backward (velocities reversed); a trial is accepted when it is reactive (one end in the
    start basin, the other in the target's THP disc), oriented start -> target. Returns positions
    ``[P, T, 22, 3]``, energies ``[P, T]`` (the chain's path after each of the P recorded iterations), statistics."""
    rng = np.random.default_rng(seed)
    half = T // 2

    def shoot(x, s):
        fw, efw, v0 = sysm.free(x, T - half, seed=s)
        bw, ebw, _ = sysm.free(x, half, seed=s + 7, velocities=-v0)
        path = np.concatenate([bw[::-1], fw])
        e = np.concatenate([ebw[::-1], efw])
        pp = phi_psi(path[[0, -1]])
        if _in_a(pp[0]) and _in_b(pp[1], target_pp):
            return path, e
        if _in_a(pp[1]) and _in_b(pp[0], target_pp):
            return path[::-1].copy(), e[::-1].copy()
        return None

    cands, energies = [], []
    for path, en in zip(seed_paths, seed_energies):
        pp_all = phi_psi(path)
        between = ~(_in_a(pp_all) | _in_b(pp_all, target_pp))
        cands.append(path[between])
        energies.append(en[between])
    cands = np.concatenate(cands) if cands else np.zeros((0, 22, 3))
    order = np.argsort(-np.concatenate(energies)) if len(cands) else np.zeros(0, dtype=int)
    cur = None
    init_shots = 0
    for i in order[:max_init]:
        init_shots += 1
        cur = shoot(cands[i].astype(np.float64), seed * 7919 + init_shots)
        if cur is not None:
            break
    if cur is None:
        return None, None, {"error": f"no reactive path in {init_shots} shots from the transition-segment frames "
                                     f"of {len(seed_paths)} geodesic paths", "initial_shots": init_shots}
    pos = np.empty((n_paths, T, 22, 3), dtype=np.float32)
    en = np.empty((n_paths, T))
    acc = 0
    trials = 0
    for it in range(burn_in + n_paths):
        j = int(rng.integers(0, T))
        trials += 1
        new = shoot(cur[0][j], seed * 104729 + 1000 + it)
        if new is not None:
            cur = new
            acc += 1
        if it >= burn_in:
            pos[it - burn_in], en[it - burn_in] = cur[0], cur[1]
    return pos, en, {"initial_shots": init_shots, "trials": trials, "acceptance": acc / max(trials, 1),
                     "burn_in": burn_in}


def _committor(sysm: AlanineFull, frames_nm: np.ndarray, target_pp, shots: int, steps: int, seed: int):
    out = []
    for f, x in enumerate(frames_nm):
        nb = na = 0
        for s in range(shots):
            pos, _, _ = sysm.free(x, steps, seed=seed * 31337 + 97 * f + s)
            pp = phi_psi(pos[-1])
            nb += int(_in_b(pp, target_pp))
            na += int(_in_a(pp))
        pp0 = phi_psi(x)
        out.append({"p_target": nb / shots, "p_start": na / shots, "shots": shots, "steps": steps,
                    "phi_psi": [float(pp0[0]), float(pp0[1])]})
    return out


def _png_report(data_pp, paths: Dict[str, Tuple[np.ndarray, np.ndarray]], geo_pp, line_pp, start_pp, target_pp,
                e_start: float, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    ax = axes[0]
    ax.hist2d(data_pp[:, 0], data_pp[:, 1], bins=60, range=[[-np.pi, np.pi], [-np.pi, np.pi]], cmap="Greys",
              cmin=1)
    colours = {"spacetime_geodesic": "tab:blue", "straight_line": "tab:orange", "two_way_shooting": "tab:green"}
    for name, (pos, _) in paths.items():
        for p in range(min(8, pos.shape[0])):
            pp = phi_psi(pos[p])
            ax.plot(pp[:, 0], pp[:, 1], ".", ms=1, color=colours.get(name, "k"), alpha=0.5,
                    label=name if p == 0 else None)
    ax.plot(geo_pp[:, 0], geo_pp[:, 1], "-", color="navy", lw=2, label="geodesic: posterior means D(x_n, sigma_n)")
    ax.plot(line_pp[:, 0], line_pp[:, 1], "--", color="darkorange", lw=2, label="straight-line centres")
    ax.plot(*start_pp, "k*", ms=12)
    ax.plot(*target_pp, "r*", ms=12)
    ax.add_patch(plt.Circle(tuple(target_pp), THP_RADIUS, fill=False, color="r"))
    ax.set_xlim(-np.pi, np.pi)
    ax.set_ylim(-np.pi, np.pi)
    ax.set_xlabel("phi (rad)")
    ax.set_ylabel("psi (rad)")
    ax.set_title("Ramachandran: MD data (grey) and paths")
    ax.legend(fontsize=7, loc="lower left", markerscale=6)
    ax = axes[1]
    for name, (_, en) in paths.items():
        m = en - e_start
        t = np.arange(m.shape[1])
        ax.plot(t, m.mean(0), color=colours.get(name, "k"), label=f"{name} (mean)")
        ax.fill_between(t, np.percentile(m, 10, 0), np.percentile(m, 90, 0), color=colours.get(name, "k"),
                        alpha=0.2)
    ax.set_xlabel("MD step along the path")
    ax.set_ylabel("potential energy - E(minimised start) (kJ/mol)")
    ax.set_title("energy profiles (mean, 10-90%)")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _html(summary: Dict[str, Any], png: bytes) -> str:
    import html as _h

    rows = []
    for name, m in summary["methods"].items():
        if "thp" not in m:
            rows.append(f"<tr><td>{_h.escape(name)}</td><td colspan=5>{_h.escape(str(m.get('error', '')))}</td></tr>")
            continue
        f = lambda d: "-" if d["mean"] is None else f"{d['mean']:.2f} &plusmn; {d['std']:.2f}"  # noqa: E731
        rows.append(f"<tr><td>{_h.escape(name)}</td><td>{100 * m['thp']:.1f}%</td>"
                    f"<td>{f(m['rmsd_final_angstrom'])}</td><td>{f(m['ets_kj_mol'])}</td>"
                    f"<td>{m['force_evaluations']['sampling']:,}</td><td>{m['seconds']:.1f}</td></tr>")
    img = base64.b64encode(png).decode()
    return ("<!doctype html><meta charset=utf-8><title>alanine-full TPS</title>"
            "<h1>Full-atom alanine dipeptide transition paths</h1>"
            f"<p>{_h.escape(summary['protocol'])}</p>"
            "<table border=1 cellpadding=4><tr><th>method</th><th>THP</th><th>final RMSD (A)</th>"
            "<th>ETS (kJ/mol, hitting paths)</th><th>MD steps (sampling)</th><th>seconds</th></tr>"
            + "".join(rows) + "</table>"
            f"<p>data force evaluations: {summary['force_evaluations']['data']:,}; model: "
            f"{_h.escape(json.dumps(summary['model_quality']))}</p>"
            f"<img src='data:image/png;base64,{img}' style='max-width:100%'>"
            "<pre>" + _h.escape(json.dumps({k: v for k, v in summary.items() if k != 'methods'}, indent=1)[:20000])
            + "</pre>")


def run_alanine_full(n_paths: int, out: Optional[str] = None, *, quick: bool = False, baselines: bool = True,
                     seed: int = 0, progress: Optional[Callable[[str], None]] = None, device: str = "cpu",
                     **settings) -> Dict[str, Any]:
    """Run the pipeline (module docstring) and write ``out/{paths.npz, paths_straight_line.npz,
    paths_two_way_shooting.npz, topology.pdb, data.npz, summary.json, report.png, report.html}``.

    ``settings``: any key of :data:`ALANINE_FULL_DEFAULTS` (None keeps the default); ``quick``: tiny settings
    (:data:`QUICK`) for smoke tests. ``paths.npz``: ``positions [P, T, 22, 3]`` (nm, float32, atom order of
    ``topology.pdb``), ``energies [P, T]`` (kJ/mol, force field only, of those positions), ``geodesic_xs [N, 22, 3]``
    (nm), ``geodesic_means [N, 22, 3]`` (nm, the posterior means ``D(x_n, sigma_n)``), ``geodesic_sigmas [N]``
    (Angstrom, model units), ``kappas [N]`` (kJ/mol/nm^2), ``centres [N, 22, 3]`` (nm, where the restraint pulled:
    ``x_n`` with ``centres="curve"``, ``D(x_n, sigma_n)`` with ``"denoised"``; with ``reparam="arclength"``
    resampled at equal data-space arc length, :func:`reparam_arclength`), ``centre_sigmas [N]`` (Angstrom, the
    noise level at each centre, from which ``kappas`` come). Returns the summary.
    """
    import torch

    say = progress or (lambda s: None)
    unknown = set(settings) - set(ALANINE_FULL_DEFAULTS)
    if unknown:
        raise LatentgeoError(f"unknown setting(s) {', '.join(sorted(unknown))}; use {', '.join(ALANINE_FULL_DEFAULTS)}")
    kw = dict(ALANINE_FULL_DEFAULTS)
    if quick:
        kw.update(QUICK)
    kw.update({k: v for k, v in settings.items() if v is not None})
    _check_settings(n_paths, kw)
    if out is not None:
        from latentgeo.runfolder import check_output_dir

        check_output_dir(out, "--out")
    _require()
    t_all = time.perf_counter()
    seconds: Dict[str, float] = {}
    T_K = float(kw["temperature"])
    sysm = AlanineFull(T_K, kw["timestep_fs"], kw["friction_per_ps"], kw["platform"], seed, kw["restrain"])
    from openmm import app

    # endpoints: minimised shipped structures, start centred (heavy-atom centroid 0), target aligned onto it
    t0 = time.perf_counter()
    start = sysm.minimize(sysm.pdb_positions)
    start = start - start[HEAVY_ATOMS].mean(0)
    tgt_raw = sysm.minimize(np.asarray(app.PDBFile(str(pdb_path("c7ax"))).getPositions(asNumpy=True)._value))
    target = align(tgt_raw, start)
    e_start = float(sysm.energy(start))
    e_target = float(sysm.energy(target))
    n_min = sysm.force_evaluations  # two minimisations (iteration bound) + the two reference energies
    sysm.force_evaluations = 0
    start_pp, target_pp = phi_psi(start), phi_psi(target)

    # 1. Boltzmann data
    say(f"data: 2 x {kw['data_frames']} frames at {T_K:g} K every {kw['data_stride']} steps"
        + (f" + {kw['data_frames']} at {kw['data_hot_k']:g} K" if kw["data_hot_k"] else ""))
    runs = []
    for k, (x0, temp) in enumerate([(start, T_K), (target, T_K)] + ([(start, float(kw["data_hot_k"]))]
                                                                     if kw["data_hot_k"] else [])):
        sysm.set_temperature(temp)
        sysm.set_restraint(None, 0.0)
        sysm.set_positions(x0)
        sysm.context.applyConstraints(1e-10)
        sysm.context.setVelocitiesToTemperature(temp * sysm._unit.kelvin, seed * 101 + k + 1)
        sysm.step(20 * kw["data_stride"])  # equilibration, counted
        runs.append(sysm.run_frames(kw["data_frames"], kw["data_stride"]))
    sysm.set_temperature(T_K)
    n_data = sysm.force_evaluations
    sysm.force_evaluations = 0
    frames = np.concatenate(runs)
    aligned = align(frames, start)
    data_A = (10.0 * aligned).reshape(len(aligned), 66)
    data_pp = phi_psi(aligned)
    seconds["data"] = time.perf_counter() - t0

    # 2. denoiser of the aligned coordinates (Angstrom)
    t0 = time.perf_counter()
    from latentgeo.diffusion import fit_denoiser

    say(f"denoiser: MLP {kw['hidden']}x{kw['depth']}, {kw['train_steps']} steps on {len(data_A)} frames (66-D)")
    torch.manual_seed(seed)
    den = fit_denoiser(torch.as_tensor(data_A, dtype=torch.float32), net="mlp", steps=kw["train_steps"],
                       batch_size=512, seed=seed, device=device,
                       net_kwargs=dict(hidden=kw["hidden"], depth=kw["depth"], emb_dim=64))
    den = den.to("cpu").double().eval()
    seconds["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    from latentgeo.diffusion.samplers import sample as _sample

    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 5)
        xs_model = _sample(den, (min(2000, len(data_A)), 66), n_steps=32, sampler="heun", generator=gen,
                           dtype=torch.float64).numpy().reshape(-1, 22, 3) / 10.0
    bonds = _bonds(sysm.topology)
    d_md = np.linalg.norm(aligned[:, bonds[:, 0]] - aligned[:, bonds[:, 1]], axis=-1)
    d_mod = np.linalg.norm(xs_model[:, bonds[:, 0]] - xs_model[:, bonds[:, 1]], axis=-1)
    quality = {"samples": int(len(xs_model)),
               "ramachandran_tv_vs_data": _rama_tv(phi_psi(xs_model), data_pp),
               "ramachandran_tv_data_halves": _rama_tv(data_pp[::2], data_pp[1::2]),
               "bond_length_mean_abs_error_angstrom": float(10 * np.abs(d_mod - d_md.mean(0)).mean()),
               "bond_length_md_mean_abs_deviation_angstrom": float(10 * np.abs(d_md - d_md.mean(0)).mean()),
               "bond_length_max_bias_angstrom": float(10 * np.abs(d_mod.mean(0) - d_md.mean(0)).max()),
               "note": "TV distance of 24x24 (phi, psi) histograms; 'data_halves' is the TV between two halves of "
                       "the data (the sampling-noise floor); bond errors against the MD data's mean bond lengths"}
    seconds["model_quality"] = time.perf_counter() - t0

    # 3. geodesic
    t0 = time.perf_counter()
    from latentgeo.molecules.tps import tps_geodesic

    sigma_end = math.exp(-kw["log_snr"] / 2)
    xa = torch.as_tensor(10.0 * start.reshape(66), dtype=torch.float64)
    xb = torch.as_tensor(10.0 * target.reshape(66), dtype=torch.float64)
    say(f"geodesic: N={kw['n_points']}, {kw['geo_steps']} Adam steps, sigma_end {sigma_end:.3g} A")
    gxs, gsg, ginfo = tps_geodesic(den, xa, xb, sigma_end, n_points=kw["n_points"], n_nodes=kw["n_nodes"],
                                   steps=kw["geo_steps"], lr=kw["geo_lr"], snr_penalty=kw["snr_penalty"],
                                   snr_lambda=kw["snr_lambda"], seed=seed, n_probes=1, objective=kw["objective"])
    seconds["geodesic"] = time.perf_counter() - t0
    geo_nm = gxs.numpy().reshape(-1, 22, 3) / 10.0
    with torch.no_grad():
        geo_mean_nm = den(gxs, gsg).numpy().reshape(-1, 22, 3) / 10.0  # posterior means D(x_n, sigma_n)
    sig = gsg.numpy()
    tt = np.linspace(0.0, 1.0, kw["n_points"])[:, None, None]
    line_nm = (1 - tt) * start[None] + tt * target[None]
    if kw["centres"] == "denoised":  # restraint centres: the posterior means of the curve's points (both curves)
        with torch.no_grad():
            line_c = den(torch.as_tensor(10.0 * line_nm.reshape(-1, 66)), gsg).numpy().reshape(-1, 22, 3) / 10.0
        geo_c = geo_mean_nm
    else:
        geo_c, line_c = geo_nm, line_nm
    sig_md = sig  # the noise level at each restraint centre
    if kw["reparam"] == "arclength":  # centres evenly spaced in data space; sigma interpolated along with them
        geo_c, sig_md = reparam_arclength(geo_c, sig)
        line_c, _ = reparam_arclength(line_c)
    kappas = restraint_kappas(sig_md, T_K, kw["kappa_scale"], kw["kappa_cap"], kw["schedule"], kw["kappa_floor"])

    # 4. steered MD along the geodesic (and the straight line)
    T = kw["n_points"] * kw["k_steps"]
    methods: Dict[str, Any] = {}
    arrays: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for name, centres in [("spacetime_geodesic", geo_c)] + ([("straight_line", line_c)] if baselines else []):
        t0 = time.perf_counter()
        say(f"steered MD ({name}): {n_paths} paths x {kw['n_points']} points x {kw['k_steps']} steps")
        sysm.force_evaluations = 0
        pos, en = _sample_paths(sysm, start, centres, kappas, kw["k_steps"], n_paths, seed + (0 if name.startswith(
            "spacetime") else 17), say, name)
        n_md = n_paths * T
        met = path_metrics(pos, en, target, e_start)
        met["force_evaluations"] = {"sampling": int(n_md), "scoring": int(sysm.force_evaluations - n_md)}
        met["seconds"] = time.perf_counter() - t0
        methods[name] = met
        arrays[name] = (pos, en)
    # two-way shooting, seeded at the highest-energy frame of the first geodesic path
    shoot_info = None
    if baselines:
        t0 = time.perf_counter()
        P_s = kw["shooting_paths"] if kw["shooting_paths"] is not None else n_paths
        if P_s > 0:
            say(f"two-way shooting: {P_s} Monte Carlo paths of {T} steps")
            sysm.force_evaluations = 0
            gpos, gen_ = arrays["spacetime_geodesic"]
            pos, en, shoot_info = _two_way_shooting(sysm, gpos[:8], gen_[:8], target_pp, P_s, T, seed + 3)
            n_sh = sysm.force_evaluations
            if pos is None:
                methods["two_way_shooting"] = {**shoot_info, "force_evaluations": {"sampling": int(n_sh // 2),
                                                                                   "scoring": int(n_sh // 2)},
                                               "seconds": time.perf_counter() - t0}
            else:
                met = path_metrics(pos, en, target, e_start)
                met["force_evaluations"] = {"sampling": int(n_sh // 2), "scoring": int(n_sh - n_sh // 2)}
                met["seconds"] = time.perf_counter() - t0
                met["shooting"] = shoot_info
                methods["two_way_shooting"] = met
                arrays["two_way_shooting"] = (pos, en)
    # 5. committor at the highest-energy frames of a few geodesic paths
    committor = []
    if kw["committor_frames"] > 0:
        t0 = time.perf_counter()
        gpos, gen_ = arrays["spacetime_geodesic"]
        nf = min(kw["committor_frames"], n_paths)
        say(f"committor: {nf} frames x {kw['committor_shots']} shots x {kw['committor_steps']} steps")
        tops = np.stack([gpos[p][int(np.argmax(gen_[p]))] for p in range(nf)]).astype(np.float64)
        sysm.force_evaluations = 0
        committor = _committor(sysm, tops, target_pp, kw["committor_shots"], kw["committor_steps"], seed + 11)
        seconds["committor"] = time.perf_counter() - t0
        n_comm = sysm.force_evaluations
    else:
        n_comm = 0

    # energy re-check: a fresh OpenMM context re-evaluates stored (float32) positions
    t0 = time.perf_counter()
    chk = AlanineFull(T_K, kw["timestep_fs"], kw["friction_per_ps"], "Reference", seed)
    rng = np.random.default_rng(seed)
    diffs = []
    for name, (pos, en) in arrays.items():
        idx = rng.integers(0, pos.shape[0] * pos.shape[1], size=min(50, pos.shape[0] * pos.shape[1]))
        flat_p, flat_e = pos.reshape(-1, 22, 3)[idx], en.reshape(-1)[idx]
        diffs.append(np.abs(chk.energy(flat_p.astype(np.float64)) - flat_e))
    recheck = float(np.max(np.concatenate(diffs))) if diffs else 0.0
    seconds["recheck"] = time.perf_counter() - t0

    geo = methods["spacetime_geodesic"]
    seconds["total"] = time.perf_counter() - t_all
    summary: Dict[str, Any] = {
        "system": "alanine-full",
        "protocol": (f"alanine dipeptide, 22 atoms, vacuum, amber99sbildn.xml, NoCutoff, HBonds constraints, "
                     f"LangevinMiddleIntegrator {T_K:g} K, friction {kw['friction_per_ps']:g}/ps, "
                     f"{kw['timestep_fs']:g} fs; C5 -> C7ax; {n_paths} paths x {T} MD steps "
                     f"({kw['n_points']} curve points x {kw['k_steps']} steps)"),
        "n_paths": int(n_paths),
        "thp": geo["thp"],
        "rmsd_final_angstrom": geo["rmsd_final_angstrom"],
        "ets_kj_mol": geo["ets_kj_mol"],
        "force_evaluations": {
            "data": int(n_data), "sampling": geo["force_evaluations"]["sampling"],
            "scoring": geo["force_evaluations"]["scoring"], "minimisation_upper_bound": int(n_min),
            "baselines_and_committor": int(sum(m["force_evaluations"]["sampling"] + m["force_evaluations"]["scoring"]
                                               for k, m in methods.items() if k != "spacetime_geodesic") + n_comm),
            "note": "one MD step = one force evaluation; 'scoring' = the energy of every recorded MD state (for "
                    "ETS); the geodesic and the model use no force evaluations"},
        "metric_definitions": {
            "thp": "fraction of paths whose final (phi, psi) (atoms C-N-CA-C, N-CA-C-N) is within 0.75 rad "
                   "(Euclidean, wrapped) of the minimised target's; thp_tpsdps_phi_atoms uses tps-dps's phi atoms "
                   "(1, 6, 8, 14)",
            "rmsd_final_angstrom": "heavy-atom RMSD of each path's final frame to the minimised C7ax structure "
                                   "after Kabsch alignment; mean and population std over paths",
            "ets_kj_mol": "per path, max force-field energy over every recorded MD state minus the energy of the "
                          "minimised start (C5); mean / std over the paths that hit the target (as tps-dps); "
                          "ets_all_paths_kj_mol over all paths; ets_absolute_kj_mol: the raw maximum"},
        "e_start_kj_mol": e_start, "e_target_kj_mol": e_target,
        "start_phi_psi": start_pp.tolist(), "target_phi_psi": target_pp.tolist(),
        "energy_recheck_max_abs_kj_mol": recheck,
        "methods": methods,
        "committor": {"frames": committor, "force_evaluations": int(n_comm),
                      "mean_p_target": (float(np.mean([c["p_target"] for c in committor])) if committor else None),
                      "note": "highest-energy frame of each of the first geodesic paths; unbiased MD with fresh "
                              "velocities; "
                              "p_target = fraction ending in the target's THP disc, p_start in the start basin"},
        "model_quality": quality,
        "geodesic": {**ginfo, "sigma_end_angstrom": sigma_end, "sigma_min_angstrom": float(sig.min()),
                     "sigma_max_angstrom": float(sig.max()), "kappa_min": float(kappas.min()),
                     "kappa_max": float(kappas.max()),
                     "kappa_units": "kJ/mol/nm^2 = kappa_scale * kB T / (sigma_n[A] / 10)^2, capped"},
        "data": {"frames": int(len(frames)), "force_evaluations": int(n_data),
                 "runs": [f"{T_K:g} K from C5", f"{T_K:g} K from C7ax"]
                 + ([f"{kw['data_hot_k']:g} K from C5"] if kw["data_hot_k"] else []),
                 "fraction_near_target": float(_in_b(data_pp, target_pp).mean())},
        "settings": {k: v for k, v in kw.items()},
        "seed": int(seed),
        "seconds": float(seconds["total"]),
        "seconds_split": seconds,
        "platform": f"OpenMM {sysm.platform} platform; {_platform.node() or 'unknown'} {_platform.machine()}, "
                    f"torch threads {torch.get_num_threads()}",
    }
    if out is not None:
        from latentgeo.checkpoint import atomic_write_bytes, atomic_write_json

        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(o / "topology.pdb", pdb_text(10.0 * start, "alanine dipeptide, minimised C5 start, "
                                                                     "reference frame of paths.npz (Angstrom)")
                           .encode())
        for name, fname in (("spacetime_geodesic", "paths.npz"), ("straight_line", "paths_straight_line.npz"),
                            ("two_way_shooting", "paths_two_way_shooting.npz")):
            if name in arrays:
                pos, en = arrays[name]
                extra = dict(geodesic_xs=geo_nm, geodesic_means=geo_mean_nm, geodesic_sigmas=sig,
                             kappas=kappas, centres=geo_c, centre_sigmas=sig_md) if name != \
                    "two_way_shooting" else {}
                if name == "straight_line":
                    extra["geodesic_xs"] = line_nm
                    extra["centres"] = line_c
                    del extra["geodesic_means"]
                atomic_write_bytes(o / fname, _npz_bytes(positions=pos.astype(np.float32), energies=en, **extra))
        atomic_write_bytes(o / "data.npz", _npz_bytes(frames_angstrom=data_A.astype(np.float32), phi_psi=data_pp))
        png = _png_report(data_pp, arrays, phi_psi(geo_mean_nm), phi_psi(line_nm), start_pp, target_pp, e_start,
                          f"{n_paths} paths: geodesic THP {100 * geo['thp']:.0f}%, RMSD "
                          f"{geo['rmsd_final_angstrom']['mean']:.2f} A, ETS "
                          f"{geo['ets_kj_mol']['mean'] or float('nan'):.1f}"
                          " kJ/mol")
        atomic_write_bytes(o / "report.png", png)
        atomic_write_bytes(o / "report.html", _html(summary, png).encode())
        atomic_write_json(o / "summary.json", summary)
    return summary
