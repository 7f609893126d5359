"""Transition path sampling on 2-D molecular energy surfaces (alanine dipeptide dihedrals, Mueller-Brown)."""
from latentgeo.molecules.potentials import (
    ALANINE_END,
    ALANINE_START,
    MUELLER_BROWN_MINIMA,
    AlanineTable,
    MuellerBrown,
    Potential,
    load_alanine_table,
    wrap_angle,
)
from latentgeo.molecules.bounds import grid_lower_bound, minimax_path
from latentgeo.molecules.baselines import densify, straight_path, string_method, two_way_shooting
from latentgeo.molecules.kde import KDEDenoiser
from latentgeo.molecules.metrics import TPSMetrics, best_so_far, equal_evaluations, tps_metrics
from latentgeo.molecules.langevin import boltzmann_samples, langevin, uniform_starts
from latentgeo.molecules.openmm_source import openmm_alanine_samples
from latentgeo.molecules.run import SYSTEMS, make_system, run_tps
from latentgeo.molecules.tps import (TPSResult, annealed_langevin, fit_tps_denoiser, max_energy, tps_geodesic,
                                     transition_paths)

__all__ = [
    "ALANINE_END",
    "ALANINE_START",
    "MUELLER_BROWN_MINIMA",
    "AlanineTable",
    "MuellerBrown",
    "Potential",
    "load_alanine_table",
    "wrap_angle",
    "grid_lower_bound",
    "minimax_path",
    "densify",
    "straight_path",
    "string_method",
    "two_way_shooting",
    "KDEDenoiser",
    "TPSMetrics",
    "best_so_far",
    "equal_evaluations",
    "tps_metrics",
    "boltzmann_samples",
    "langevin",
    "uniform_starts",
    "openmm_alanine_samples",
    "SYSTEMS",
    "make_system",
    "run_tps",
    "TPSResult",
    "annealed_langevin",
    "fit_tps_denoiser",
    "max_energy",
    "tps_geodesic",
    "transition_paths",
]
