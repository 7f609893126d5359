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
]
