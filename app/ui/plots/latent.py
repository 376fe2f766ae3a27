"""The latent map (ICSG3D paper, Fig. 3): the generator's training cells on the two principal axes of
its latent space, coloured by formation energy, with bases and their candidates on top.

The map itself is computed once by ``crystal-designer train latent-map`` and shipped in
``models/``; the worker loads it and encodes the bases (``jobs.latent_map``). Candidates carry
their sampled latent vectors, projected here with the map's PCA (a small matrix product).
"""

from __future__ import annotations

import numpy as np

from app.ui.plots.canvas import PlotWidget

#: Colour map of the formation energy (low = stable = dark).
ENERGY_CMAP = "viridis"


def project(data: dict, latents: np.ndarray) -> np.ndarray:
    """PCA coordinates (n, 2) of latent vectors (n, latent) with the map's ``mean`` and ``components``."""
    latents = np.atleast_2d(np.asarray(latents, dtype=np.float64))
    return (latents - np.asarray(data["mean"])) @ np.asarray(data["components"]).T


class LatentMapPlot(PlotWidget):
    """Training cells coloured by formation energy; bases as stars, candidates as open circles."""

    def __init__(self, parent=None) -> None:
        super().__init__("Latent map", parent)
        self.task = None
        self.resize(820, 640)

    async def compute(self, client, bases: list, candidates: list) -> None:
        """Ask the worker for the map (and the bases' latent means), then draw.

        Parameters
        ----------
        client : WorkerClient
        bases : list of CrystalRecord
            Rows to place by encoding them (cubic, ≤ 40 sites).
        candidates : list of CrystalRecord
            Kept candidates; those with a latent vector are drawn.
        """
        from app.engine.core.errors import CrystalDesignerError
        from app.worker import jobs

        self.show_message("loading the latent map…")
        items = [(r.name, r.get_structure()) for r in bases if r.get_structure() is not None]
        try:
            data = await client.submit(jobs.latent_map, bases=items)
        except CrystalDesignerError as error:
            self.show_message(f"No latent map: {error}")
            return
        self.draw(data, candidates)

    def draw(self, data: dict, candidates: list) -> None:
        """Draw the map ``data`` (``jobs.latent_map``'s result) with the ``candidates`` that have a latent."""
        self.figure.clear()
        axes = self.figure.add_subplot()
        points = np.asarray(data["points"], dtype=np.float64)
        energy = np.asarray(data["formation_energy"], dtype=np.float64)
        scatter = axes.scatter(points[:, 0], points[:, 1], c=energy, cmap=ENERGY_CMAP, s=4, alpha=0.6,
                               linewidths=0, rasterized=True)
        colour_bar = self.figure.colorbar(scatter, ax=axes)
        colour_bar.set_label("formation energy (eV/atom, predicted)")
        self.table = {"kind": [], "name": [], "pc1": [], "pc2": [], "formation_energy_eV_per_atom": []}
        validation = np.asarray(data["validation"], dtype=bool)
        for row, (x, y) in enumerate(points):
            self._row("validation cell" if validation[row] else "training cell", "", x, y, energy[row])
        notes = []
        with_latent = [r for r in candidates if r.latent is not None]
        if with_latent:
            placed = project(data, np.stack([r.latent for r in with_latent]))
            axes.scatter(placed[:, 0], placed[:, 1], s=36, facecolors="none", edgecolors="crimson", linewidths=1.2,
                         label=f"candidates ({len(with_latent)})", zorder=3)
            for record, (x, y) in zip(with_latent, placed):
                self._row("candidate", record.name, x, y, record.property("formation_energy_per_atom"))
        if len(with_latent) < len(candidates):
            notes.append(f"{len(candidates) - len(with_latent)} candidates without a latent vector "
                         "(from an older session) are not shown.")
        for base in data.get("bases") or []:
            if base["point"] is None:
                notes.append(f"{base['name']}: not on the map ({base['error']})")
                continue
            x, y = base["point"]
            axes.scatter([x], [y], marker="*", s=260, c="gold", edgecolors="black", linewidths=1.0, zorder=4,
                         label=f"base {base['name']}")
            axes.annotate(base["name"], (x, y), xytext=(6, 6), textcoords="offset points", fontsize="small")
            self._row("base", base["name"], x, y, None)
        explained = data.get("explained_variance") or [float("nan")] * 2
        axes.set_xlabel(f"PC1 ({100 * explained[0]:.1f} % of latent variance)")
        axes.set_ylabel(f"PC2 ({100 * explained[1]:.1f} % of latent variance)")
        axes.set_title(f"Latent space of the generator's {len(points):,} training cells (PCA)")
        if with_latent or data.get("bases"):
            axes.legend(loc="best", fontsize="small")
        if data.get("stale"):
            notes.insert(0, data["stale"])
        self.show_message(" ".join(notes))
        self.canvas.draw_idle()

    def _row(self, kind: str, name: str, x: float, y: float, energy: float | None) -> None:
        self.table["kind"].append(kind)
        self.table["name"].append(name)
        self.table["pc1"].append(round(float(x), 4))
        self.table["pc2"].append(round(float(y), 4))
        self.table["formation_energy_eV_per_atom"].append(None if energy is None else round(float(energy), 4))
