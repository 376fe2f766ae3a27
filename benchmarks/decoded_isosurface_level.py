"""Which isosurface level draws one blob per atom on decoded periodic maps, and on computed ones.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decoded_isosurface_level.py [--n 100] [--bases SrTiO3.cif TiO2_rutile.cif]

Generates ``--n`` candidates around each base (``resources/examples``) with the shipped periodic
generator (``relax=False``; charge balance, uniqueness, hull and novelty filters off, so every
candidate the distance and bond checks let through keeps its decoded map, as the viewer gets it).
For each decoded map and each level fraction f (0.02–0.60 in steps of 0.01; the viewer's
``scene.level_range(…, non_negative=True)`` and ``scene.level_at``) it counts the connected
components of {density ≥ level} on the periodic grid (faces connect voxels; components touching
across a cell face are one) and compares them with the number of atoms the segmentation found.
The same is done for the map computed from the atoms of each candidate (``periodic_density.encode``
of its standard cell, the map the viewer shows for the structure itself) against that cell's sites.

Prints one JSON object: per f, the share of maps whose component count equals the atom count
(``agree``, what the best f maximises), with fewer components and with more; the share with one
blob per atom (each atom's nearest voxel in a component of its own, no other component), with a
blob holding no atom (noise), with atoms sharing a blob (merged) and with an atom below the level;
for decoded maps (best f also per base) and computed maps, the best f of each, and the fractions
at which the bases' own maps show one blob per atom. ``--n 100``: ~25 s on 2 cores.
Chose ``viewer_panel.DEFAULT_LEVEL_DECODED``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

FRACTIONS = np.round(np.arange(0.02, 0.6001, 0.01), 2)


def periodic_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a boolean ``(G, G, G)`` mask on the 3-torus (face connectivity).

    ``scipy.ndimage.label`` has no periodic mode: labels that meet across a pair of opposite faces
    are joined with ``scipy.sparse.csgraph.connected_components`` (as the segmentation does).

    Returns
    -------
    labels : numpy.ndarray
        ``(G, G, G)`` int, 0 outside the mask, else the periodic component's index (from 1).
    count : int
        Number of components.
    """
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels, count = ndimage.label(mask)
    if count == 0:
        return labels, 0
    pairs = []
    for axis in range(3):
        first, last = np.take(labels, 0, axis=axis).ravel(), np.take(labels, -1, axis=axis).ravel()
        both = (first > 0) & (last > 0)
        pairs.append(np.stack([first[both], last[both]], axis=1))
    pairs = np.concatenate(pairs)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0] - 1, pairs[:, 1] - 1)), shape=(count, count))
    n_components, component = connected_components(graph, directed=False)
    return np.concatenate([[0], component + 1])[labels], int(n_components)


def periodic_component_count(mask: np.ndarray) -> int:
    """Number of :func:`periodic_components` of ``mask``."""
    return periodic_components(mask)[1]


def level_outcomes(density: np.ndarray, frac_coords: np.ndarray) -> np.ndarray:
    """What the isosurface at every level fraction of :data:`FRACTIONS` (the viewer's periodic
    range) makes of a map with atoms at ``frac_coords`` (``(n, 3)``, the map's cell).

    Returns
    -------
    numpy.ndarray
        ``(len(FRACTIONS), 5)`` int per fraction: components, components holding no atom's voxel
        (noise blobs), atoms sharing a component with another atom (merged), atoms whose nearest
        voxel is below the level (not enclosed), and 1 if every atom has a component of its own
        and no other component exists (one blob per atom), else 0.
    """
    from app.ui import scene

    grid = density.shape[0]
    voxels = tuple(np.mod(np.rint(np.asarray(frac_coords) * grid).astype(np.int64), grid).T)
    low, high = scene.level_range(density, non_negative=True)
    out = []
    for f in FRACTIONS:
        labels, count = periodic_components(density >= scene.level_at(float(f), low, high))
        at_atoms = labels[voxels]
        enclosed = at_atoms[at_atoms > 0]
        owners, sizes = np.unique(enclosed, return_counts=True)
        merged = int(sizes[sizes > 1].sum())
        missing = int((at_atoms == 0).sum())
        noise = count - len(owners)
        out.append((count, noise, merged, missing, int(noise == 0 and merged == 0 and missing == 0)))
    return np.array(out, dtype=np.int64)


def table(rows: list[tuple[np.ndarray, int]]) -> dict:
    """Per f: shares of maps with as many components as atoms (``agree``), fewer and more; of maps
    with one blob per atom (``one_per_atom``), with a noise blob, with merged and with unenclosed
    atoms; the best f by ``agree``."""
    if not rows:
        return {"maps": 0}
    outcomes = np.stack([o for o, _ in rows])  # (maps, fractions, 5)
    atoms = np.array([n for _, n in rows])[:, None]
    counts = outcomes[..., 0]
    shares = {"agree": (counts == atoms).mean(0), "fewer": (counts < atoms).mean(0),
              "more": (counts > atoms).mean(0), "one_per_atom": outcomes[..., 4].mean(0),
              "noise_blob": (outcomes[..., 1] > 0).mean(0), "merged": (outcomes[..., 2] > 0).mean(0),
              "unenclosed": (outcomes[..., 3] > 0).mean(0)}
    agree = shares["agree"]
    best = int(np.argmax(agree))  # first (lowest) f of the highest agreement
    return {
        "maps": len(rows),
        "per_f": {f"{f:.2f}": {key: round(float(value[i]), 3) for key, value in shares.items()}
                  for i, f in enumerate(FRACTIONS)},
        "best_f": float(FRACTIONS[best]), "best_agree": round(float(agree[best]), 3),
        "f_within_0.02_of_best": [float(f) for f, a in zip(FRACTIONS, agree) if a >= agree[best] - 0.02],
    }


def main() -> None:
    import torch  # here, not at the top: spawned segmentation workers re-import this script

    from app.engine.core.errors import StructureReadError
    from app.engine.core.paths import examples_dir
    from app.engine.generation import periodic_density
    from app.engine.generation.generator import PERIODIC, CrystalGenerator, GenerationSettings
    from app.engine.io.crystal_io import read_crystal_file

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100, help="samples per base")
    parser.add_argument("--bases", nargs="+", default=["SrTiO3.cif", "TiO2_rutile.cif"],
                        help="file names in resources/examples (or paths)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    began = time.perf_counter()
    generator = CrystalGenerator.from_models(device=args.device, segmentation_workers=1)
    decoded_rows: dict[str, list] = {}
    computed_rows: list = []
    base_rows: dict[str, list] = {}
    funnels: dict[str, dict] = {}
    try:
        for name in args.bases:
            path = examples_dir() / name if not os.path.exists(name) else name
            base = read_crystal_file(path)[0].structure
            model = generator.model_for(base)
            if model != PERIODIC:
                raise SystemExit(f"{name}: the generator takes it with the {model} model, not the periodic one")
            settings = GenerationSettings(mode="around", count=args.n, seed=args.seed, relax=False,
                                          require_charge_balance=False, require_unique=False,
                                          require_novel=False, require_near_hull=False)
            result = generator.generate(settings, base=base, model=PERIODIC)
            funnels[name] = result.funnel
            own = periodic_density.encode(base)
            base_rows[name] = [(level_outcomes(own.density, own.structure.frac_coords), len(own.structure))]
            rows = decoded_rows.setdefault(name, [])
            for candidate in result.candidates:
                if candidate.density is None or candidate.structure is None:
                    continue
                # As the viewer gets it: the record's float16 map, cast to float32.
                rows.append((level_outcomes(np.asarray(candidate.density, dtype=np.float32),
                                            candidate.structure.frac_coords), len(candidate.structure)))
                try:
                    maps = periodic_density.encode(candidate.structure)
                except StructureReadError:
                    continue
                computed_rows.append((level_outcomes(maps.density, maps.structure.frac_coords),
                                      len(maps.structure)))
    finally:
        generator.close()
    all_decoded = [row for rows in decoded_rows.values() for row in rows]
    print(json.dumps({
        "samples_per_base": args.n, "seed": args.seed, "funnels": funnels,
        "decoded": table(all_decoded),
        "decoded_per_base": {name: {k: v for k, v in table(rows).items() if k != "per_f"}
                             for name, rows in decoded_rows.items()},
        "computed": table(computed_rows),
        # The bases' own maps: the fractions at which they show one blob per atom.
        "computed_bases_one_per_atom_f": {
            name: [float(f) for f, ok in zip(FRACTIONS, rows[0][0][:, 4]) if ok] for name, rows in base_rows.items()},
        "seconds": round(time.perf_counter() - began, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }, indent=1))


if __name__ == "__main__":
    main()
