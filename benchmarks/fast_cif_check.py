"""Check that the fast CIF reader gives the same structures as pymatgen's, file by file.

Usage::

    .venv/bin/python benchmarks/fast_cif_check.py [PATH ...]

Reads every crystal file under the given paths (default: the 1,000 held-out MP CIFs of
``predict_throughput.py``, the real-world test files under ``tests/data``, and the first
``--symmetrised N`` (400) of the MP structures written by pymatgen's CifWriter with their symmetry
operations, i.e. an asymmetric unit plus up to 192 operations, in many space groups) twice through
``read_crystal_file``: with the fast CIF path and with pymatgen only. Entries must agree in
source, error, warnings, lattice, species, labels and site order, with fractional coordinates
within 1e-4 (they are exactly equal for P1 files); prints the number of files, how many the fast
path read, any disagreement, and the CPU time per file of each reader. Exits 1 on a disagreement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from app.engine.io import fast_cif
from app.engine.io.crystal_io import ReadLimits, expand_paths, read_crystal_file

COORDINATE_TOLERANCE = 1e-4


def differences(fast, slow) -> list[str]:
    """What differs between two lists of LoadedCrystal entries of one file."""
    if len(fast) != len(slow):
        return [f"{len(fast)} vs {len(slow)} entries"]
    problems = []
    for a, b in zip(fast, slow):
        for name in ("source", "error", "warnings", "block"):
            if getattr(a, name) != getattr(b, name):
                problems.append(f"{name}: {getattr(a, name)!r} vs {getattr(b, name)!r}")
        if a.structure is None or b.structure is None:
            if (a.structure is None) != (b.structure is None):
                problems.append("structure on one side only")
            continue
        s, t = a.structure, b.structure
        if len(s) != len(t):
            problems.append(f"{len(s)} vs {len(t)} sites")
            continue
        if not np.allclose(s.lattice.matrix, t.lattice.matrix, atol=1e-10, rtol=0):
            problems.append("lattice")
        if [x.species for x in s] != [x.species for x in t]:
            problems.append("species or site order")
        if s.labels != t.labels:
            problems.append("labels")
        d = s.frac_coords - t.frac_coords
        if np.abs(d - np.round(d)).max(initial=0) > COORDINATE_TOLERANCE:
            problems.append(f"coordinates differ by {np.abs(d - np.round(d)).max():.2g}")
        if s.properties != t.properties or s.site_properties != t.site_properties:
            problems.append("properties")
    return problems


def symmetrised_cifs(files: list[Path]) -> Path:
    """A fresh folder under /tmp with ``files`` rewritten as symmetrised CIFs."""
    import tempfile
    import warnings

    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    folder = Path(tempfile.mkdtemp(prefix="fast-cif-check-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            text = str(CifWriter(Structure.from_file(path), symprec=0.01))
            (folder / f"{path.stem}_symmetrised.cif").write_text(text)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--symmetrised", type=int, default=400, metavar="N")
    args = parser.parse_args()
    if args.paths:
        paths = args.paths
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from predict_throughput import cached_validation_cifs

        mp = cached_validation_cifs(1000)
        paths = [mp, Path(__file__).resolve().parents[1] / "tests" / "data",
                 symmetrised_cifs(sorted(mp.glob("*.cif"))[: args.symmetrised])]
    files, _ = expand_paths(paths)
    read_by_fast = [0]
    original = fast_cif.read_plain_cif_block

    def counting(text, max_sites=5_000):
        result = original(text, max_sites)
        read_by_fast[0] += result is not None
        return result

    fast_cif_module_reader = sys.modules["app.engine.io.crystal_io"]
    fast_cif_module_reader.read_plain_cif_block = counting
    fast_seconds = slow_seconds = 0.0
    disagreements = {}
    for path in files:
        began = time.process_time()
        fast = read_crystal_file(path, ReadLimits())
        fast_seconds += time.process_time() - began
        began = time.process_time()
        slow = read_crystal_file(path, ReadLimits(fast_cif=False))
        slow_seconds += time.process_time() - began
        problems = differences(fast, slow)
        if problems:
            disagreements[str(path)] = problems
    print(json.dumps({"files": len(files), "blocks_read_by_fast_path": read_by_fast[0],
                      "disagreements": disagreements,
                      "cpu_ms_per_file_fast": round(1000 * fast_seconds / max(len(files), 1), 2),
                      "cpu_ms_per_file_pymatgen": round(1000 * slow_seconds / max(len(files), 1), 2)}, indent=2))
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
