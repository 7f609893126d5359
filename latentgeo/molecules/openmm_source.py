"""Optional source of real MD samples of alanine dipeptide (vacuum) as (phi, psi) dihedrals.

Needs the extra ``pip install 'latentgeo[molecules]'`` (OpenMM, openmmtools for the ``AlanineDipeptideVacuum`` test
system, mdtraj for the dihedrals). Imported lazily: nothing here loads unless :func:`openmm_alanine_samples` runs.
The samples can replace the Langevin data of :func:`latentgeo.molecules.tps.transition_paths` (pass a denoiser
trained on them); the energies of the TABLE remain the scoring surface.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from latentgeo.errors import LatentgeoError, check_positive

__all__ = ["openmm_alanine_samples"]

_HINT = "install the optional extra with: pip install 'latentgeo[molecules]' (OpenMM, openmmtools, mdtraj)"


def _require():
    try:
        import mdtraj  # noqa: F401
        import openmm  # noqa: F401
        from openmmtools import testsystems  # noqa: F401
    except ImportError as exc:
        raise LatentgeoError(f"real MD samples need OpenMM, openmmtools and mdtraj ({exc.name or exc} is missing); "
                             f"{_HINT}")


def openmm_alanine_samples(n_samples: int = 1000, steps_between: int = 100, temperature: float = 300.0,
                           timestep_fs: float = 2.0, friction_per_ps: float = 1.0, equilibration_steps: int = 1000,
                           platform: str = "Reference", seed: int = 0) -> np.ndarray:
    """Langevin MD of alanine dipeptide in vacuum; returns (phi, psi) ``[n_samples, 2]`` in radians on ``[-pi, pi)``.

    Args:
        n_samples: number of frames; steps_between: MD steps between frames (decorrelation).
        temperature: Kelvin; timestep_fs: integration step (fs, with H-bond constraints of the test system);
        friction_per_ps: Langevin friction; equilibration_steps: discarded steps at the start.
        platform: OpenMM platform name ("Reference" and "CPU" always exist).
        seed: integrator random seed.
    """
    _require()
    import mdtraj
    import openmm
    from openmm import unit
    from openmmtools import testsystems

    if not (isinstance(n_samples, int) and n_samples > 0):
        raise LatentgeoError(f"n_samples must be a positive integer, got {n_samples!r}; pass e.g. n_samples=1000")
    check_positive(temperature, "temperature")
    ts = testsystems.AlanineDipeptideVacuum()
    integ = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction_per_ps / unit.picosecond,
                                            timestep_fs * unit.femtoseconds)
    integ.setRandomNumberSeed(int(seed) + 1)  # 0 means "pick one at random" in OpenMM
    try:
        plat = openmm.Platform.getPlatformByName(platform)
    except Exception:  # OpenMMException
        raise LatentgeoError(f"OpenMM platform '{platform}' is not available; use 'Reference' or 'CPU'")
    sim = openmm.app.Simulation(ts.topology, ts.system, integ, plat)
    sim.context.setPositions(ts.positions)
    sim.minimizeEnergy()
    sim.context.setVelocitiesToTemperature(temperature * unit.kelvin, int(seed) + 1)
    sim.step(int(equilibration_steps))
    frames = []
    for _ in range(n_samples):
        sim.step(int(steps_between))
        pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        frames.append(np.asarray(pos))
    traj = mdtraj.Trajectory(np.stack(frames), mdtraj.Topology.from_openmm(ts.topology))
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    out = np.stack([phi[:, 0], psi[:, 0]], -1).astype(np.float64)
    return np.mod(out + np.pi, 2 * np.pi) - np.pi
