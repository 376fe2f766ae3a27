"""Same candidates before and after a speed change: a fixed set of decoded maps, recorded and compared.

Usage::

    # with the old code (e.g. a worktree of the previous commit):
    .venv/bin/python benchmarks/generation_equivalence.py --save /tmp/generation-reference.json
    # with the new code:
    .venv/bin/python benchmarks/generation_equivalence.py --compare /tmp/generation-reference.json

Fixed latents (seeded) around four bases, each decoded by the model the generator picks and,
for SrTiO3, by the cubic model too: SrTiO3 (cubic perovskite), rutile TiO2 (tetragonal),
wurtzite ZnO (hexagonal, built here) and NaCl (cubic model). For every sample it records the
decoding error or the crystal (lattice, species, fractional coordinates) and the funnel flags
of ``generate`` without relaxation (distance, covalent bonds, charge balance, uniqueness).

``--compare`` passes when every sample decodes the same way (both fail or both give a crystal),
every crystal has the same composition, its sites pair up by species within ``--site-tolerance``
Å (periodic), its lattice lengths agree within ``--lattice-tolerance`` (relative), and every
flag is equal. It prints the largest site shift and each difference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _wurtzite():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0.0], [1 / 3, 2 / 3, 0.382]])


def bases():
    """``(name, structure, model or None = the generator's pick)``."""
    from app.engine.core.paths import examples_dir
    from app.engine.io.crystal_io import read_crystal_file

    def read(name):
        return read_crystal_file(str(examples_dir() / name))[0].structure

    srtio3 = read("SrTiO3.cif")
    return [("SrTiO3", srtio3, None), ("SrTiO3-cubic-model", srtio3, "cubic"),
            ("TiO2-rutile", read("TiO2_rutile.cif"), None), ("ZnO-wurtzite", _wurtzite(), None),
            ("NaCl", read("NaCl.cif"), None)]


def _record(structure) -> dict | None:
    if structure is None:
        return None
    return {"formula": structure.composition.reduced_formula,
            "matrix": structure.lattice.matrix.tolist(),
            "species": [site.specie.symbol for site in structure],
            "frac": structure.frac_coords.tolist()}


def run(n: int, sigma: float, seed: int) -> dict:
    from app.engine.generation.generator import CrystalGenerator, GenerationSettings

    generator = CrystalGenerator.from_models(device="cpu", segmentation_workers=1)
    out = {}
    try:
        for name, base, forced in bases():
            model = forced or generator.model_for(base)
            mu, decile = generator.encode_structure(base, model)
            rng = np.random.default_rng(seed)
            z = mu[None] + sigma * rng.standard_normal((n, len(mu)))
            began = time.process_time()
            decoded = generator.decode_latents(z, decile, model)
            decode_seconds = time.process_time() - began
            settings = GenerationSettings(mode="around", count=n, seed=seed, sigma=sigma, relax=False,
                                          require_near_hull=False, require_novel=False, batch_size=n)
            began = time.process_time()
            result = generator.generate(settings, base=base, model=model)
            generate_seconds = time.process_time() - began
            out[name] = {
                "model": model,
                "samples": [{"error": error, "crystal": _record(structure)} for structure, _, error in decoded],
                "flags": [{key: c.flags.get(key) for key in ("decoded", "distance_ok", "bonds_ok",
                                                             "charge_balanced", "unique")}
                          for c in result.candidates],
                "funnel": result.funnel,
                "cpu_seconds": {"decode_latents": round(decode_seconds, 2), "generate": round(generate_seconds, 2)},
            }
    finally:
        generator.close()
    return out


def _site_shift(a: dict, b: dict) -> float:
    """Largest periodic distance (Å) between the sites of two records paired by species
    (optimal assignment per element); inf if the species do not pair up."""
    from scipy.optimize import linear_sum_assignment

    if sorted(a["species"]) != sorted(b["species"]):
        return float("inf")
    matrix = np.asarray(a["matrix"])
    species_a, species_b = np.array(a["species"]), np.array(b["species"])
    frac_a, frac_b = np.asarray(a["frac"]), np.asarray(b["frac"])
    worst = 0.0
    for element in np.unique(species_a):
        fa, fb = frac_a[species_a == element], frac_b[species_b == element]
        delta = fa[:, None, :] - fb[None, :, :]
        delta -= np.round(delta)
        distance = np.linalg.norm(delta @ matrix, axis=-1)
        rows, cols = linear_sum_assignment(distance)
        worst = max(worst, float(distance[rows, cols].max()))
    return worst


def compare(reference: dict, current: dict, site_tolerance: float, lattice_tolerance: float) -> list[str]:
    problems, worst_shift, crystals = [], 0.0, 0
    for name, ref in reference.items():
        cur = current.get(name)
        if cur is None:
            problems.append(f"{name}: missing")
            continue
        for i, (r, c) in enumerate(zip(ref["samples"], cur["samples"])):
            rc, cc = r["crystal"], c["crystal"]
            if (rc is None) != (cc is None):
                problems.append(f"{name}[{i}]: decoded {rc is not None} before, {cc is not None} now "
                                f"({r['error'] or c['error']})")
                continue
            if rc is None:
                continue
            crystals += 1
            if rc["formula"] != cc["formula"] or len(rc["species"]) != len(cc["species"]):
                problems.append(f"{name}[{i}]: {rc['formula']} ({len(rc['species'])} sites) before, "
                                f"{cc['formula']} ({len(cc['species'])} sites) now")
                continue
            lengths_r = np.linalg.norm(rc["matrix"], axis=1)
            lengths_c = np.linalg.norm(cc["matrix"], axis=1)
            if np.max(np.abs(lengths_r - lengths_c) / lengths_r) > lattice_tolerance:
                problems.append(f"{name}[{i}]: lattice {lengths_r} before, {lengths_c} now")
            shift = _site_shift(rc, cc)
            worst_shift = max(worst_shift, shift)
            if shift > site_tolerance:
                problems.append(f"{name}[{i}] {rc['formula']}: a site moved {shift:.4f} Å")
        for i, (r, c) in enumerate(zip(ref["flags"], cur["flags"])):
            if r != c:
                problems.append(f"{name}[{i}]: flags {r} before, {c} now")
        if ref["funnel"] != cur["funnel"]:
            problems.append(f"{name}: funnel {ref['funnel']} before, {cur['funnel']} now")
    print(json.dumps({"crystals_compared": crystals, "largest_site_shift_A": round(worst_shift, 5),
                      "differences": len(problems)}))
    return problems


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="write the record of this code to this JSON file")
    group.add_argument("--compare", help="compare this code against a record written by --save")
    parser.add_argument("--n", type=int, default=64, help="samples per base")
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--site-tolerance", type=float, default=0.01, help="Å")
    parser.add_argument("--lattice-tolerance", type=float, default=1e-4, help="relative")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    current = run(args.n, args.sigma, args.seed)
    for name, record in current.items():
        print(name, record["model"], record["cpu_seconds"], record["funnel"], file=sys.stderr)
    if args.save:
        with open(args.save, "w") as handle:
            json.dump(current, handle)
        return
    with open(args.compare) as handle:
        reference = json.load(handle)
    problems = compare(reference, current, args.site_tolerance, args.lattice_tolerance)
    for problem in problems[:50]:
        print(problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
