"""The alanine dipeptide (phi, psi) energy table shipped as package data (MIT, from plainerman/Variational-Doob;
see ``tables/LICENSE-alanine.txt``). Lives with the data sets (foundation layer) so that both ``latentgeo.data`` and
``latentgeo.molecules`` use it without importing upward."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from latentgeo.errors import LatentgeoError

__all__ = ["load_alanine_table"]

_TABLE_NAME = "alanine_dipeptide_phi_psi_energy.dat"


def _table_path() -> Path:
    return Path(str(resources.files("latentgeo.data").joinpath("tables", _TABLE_NAME)))


def load_alanine_table(path: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load the alanine dipeptide (phi, psi) energy table.

    Args:
        path: a table file (``# phi psi z`` columns, phi varying fastest); default: the copy shipped as package data
            (``latentgeo/data/tables/alanine_dipeptide_phi_psi_energy.dat``, MIT, see ``LICENSE-alanine.txt``).

    Returns:
        ``(phi, psi, energy)``: ``phi`` ``[89]`` and ``psi`` ``[89]`` are the increasing grid angles in radians on
        ``[-pi, pi)`` (spacing ``2 pi / 89``), and ``energy`` ``[89, 89]`` (float64, kT units) with
        ``energy[i, j] = U(phi[i], psi[j])``. The minimum 0 sits at ``(-1.377, 1.094)``.
    """
    p = Path(path) if path is not None else _table_path()
    if not p.exists():
        raise LatentgeoError(
            f"alanine energy table not found at '{p}'; reinstall latentgeo (the table ships as package data) "
            "or pass the path of alanine_dipeptide_phi_psi_energy.dat"
        )
    try:
        d = np.loadtxt(p, comments="#", dtype=np.float64)
    except ValueError as exc:
        raise LatentgeoError(f"cannot parse the alanine table '{p}' ({exc}); it needs three numeric columns phi psi U")
    if d.ndim != 2 or d.shape[1] != 3:
        raise LatentgeoError(f"alanine table '{p}' has shape {d.shape}; expected rows of three columns phi psi U")
    phi = np.unique(d[:, 0])
    psi = np.unique(d[:, 1])
    if phi.size * psi.size != d.shape[0]:
        raise LatentgeoError(f"alanine table '{p}' is not a full grid ({d.shape[0]} rows for {phi.size}x{psi.size}); "
                             "reinstall latentgeo")
    i = np.searchsorted(phi, d[:, 0])
    j = np.searchsorted(psi, d[:, 1])
    energy = np.empty((phi.size, psi.size))
    energy[i, j] = d[:, 2]
    if not np.isfinite(energy).all():
        raise LatentgeoError(f"alanine table '{p}' contains NaN or inf energies; use an intact copy of the file")
    return phi, psi, energy
