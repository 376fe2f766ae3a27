"""Small cubic crystals and round-trip helpers shared by the density and segmentation tests."""

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from app.engine.generation import density as D
from app.engine.generation.segmentation import decode


def nacl():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl():
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def srtio3():
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])


def cu2mnal():
    # Full Heusler L2_1: Cu 8c, Mn 4a, Al 4b.
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.95), ["Cu", "Mn", "Al"],
                                     [[0.25, 0.25, 0.25], [0, 0, 0], [0.5, 0.5, 0.5]])


def ba2mgwo6():
    # Double perovskite, 40 sites: the largest cell the representation accepts.
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(8.1), ["Ba", "Mg", "W", "O"],
                                     [[0.25, 0.25, 0.25], [0, 0, 0], [0.5, 0.5, 0.5], [0.26, 0, 0]])


PROTOTYPES = {"NaCl": nacl, "CsCl": cscl, "SrTiO3": srtio3, "Cu2MnAl": cu2mnal}


MATCHER = StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10)


def round_trip(encoded):
    abc = D.lattice_from_coords(D.model_input(encoded)[1:])
    return decode(encoded.density, encoded.species, abc), abc


def max_site_error(decoded, reference):
    """Largest distance (Å) from a decoded site to the nearest reference site of its element."""
    errors = []
    for site in decoded:
        same = [s for s in reference if s.specie == site.specie]
        delta = np.array([s.frac_coords for s in same]) - site.frac_coords
        delta -= np.round(delta)
        errors.append(np.linalg.norm(delta * reference.lattice.abc, axis=1).min())
    return max(errors)

