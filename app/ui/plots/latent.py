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
            Candidates; those with a latent vector are drawn (the generator gives one to every
            candidate that passed the filters before relaxation; kept ones are circled).
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
        # Colour range of the central 96 % of cells: a few outliers (+3 eV/atom) would grey out the rest.
        low, high = np.nanpercentile(energy, [2, 98]) if len(energy) else (0.0, 1.0)
        scatter = axes.scatter(points[:, 0], points[:, 1], c=energy, cmap=ENERGY_CMAP, s=4, alpha=0.6,
                               linewidths=0, rasterized=True, vmin=low, vmax=high)
        colour_bar = self.figure.colorbar(scatter, ax=axes, extend="both")
        colour_bar.set_label("formation energy (eV/atom, predicted)")
        self.table = {"kind": [], "name": [], "pc1": [], "pc2": [], "formation_energy_eV_per_atom": []}
        validation = np.asarray(data["validation"], dtype=bool)
        for row, (x, y) in enumerate(points):
            self._row("validation cell" if validation[row] else "training cell", "", x, y, energy[row])
        notes = []
        # The map is the cubic generator's latent space; candidates of the periodic generator (any
        # crystal system) have latents of another model (another size) and cannot be projected on it.
        map_dim = np.asarray(data["components"]).shape[1]
        other_model = [r for r in candidates if r.latent is not None and len(r.latent) != map_dim]
        with_latent = [r for r in candidates if r.latent is not None and len(r.latent) == map_dim]
        if other_model:
            count = len(other_model)
            notes.append(f"{count} candidate{'s' if count > 1 else ''} of the periodic generator "
                         f"{'are' if count > 1 else 'is'} not shown: the map is the cubic generator's latent space.")
        placed = project(data, np.stack([r.latent for r in with_latent])) if with_latent else np.zeros((0, 2))
        kept = np.array([bool(r.kept) for r in with_latent], dtype=bool)
        for record, (x, y) in zip(with_latent, placed):
            self._row("candidate" if record.kept else "candidate (rejected in the last stages)", record.name, x, y,
                      record.property("formation_energy_per_atom"))
        missing = sum(1 for r in candidates if r.kept and r.latent is None)
        if missing:
            notes.append(f"{missing} kept candidates without a latent vector (from an older session) are not shown.")
        bases = []
        for base in data.get("bases") or []:
            if base["point"] is None:
                notes.append(f"{base['name']}: not on the map ({base['error']})")
                continue
            bases.append((base["name"], np.asarray(base["point"], dtype=np.float64)))
            self._row("base", base["name"], *base["point"], None)
        targets = [axes]
        if len(placed) or bases:
            # Candidates lie within σ of their base in all latent dimensions, so on two axes they sit
            # close to it: an inset shows that neighbourhood.
            around = np.vstack([placed] + [point[None] for _, point in bases])
            centre = around.mean(axis=0)
            half = max(float(np.abs(around - centre).max()) * 1.3, 0.6)
            inset = axes.inset_axes([0.08, 0.58, 0.3, 0.36])
            inset.scatter(points[:, 0], points[:, 1], c=energy, cmap=ENERGY_CMAP, s=10, alpha=0.6, linewidths=0,
                          vmin=low, vmax=high, rasterized=True)
            inset.set_xlim(centre[0] - half, centre[0] + half)
            inset.set_ylim(centre[1] - half, centre[1] + half)
            inset.tick_params(labelsize="x-small")
            inset.text(0.03, 0.03, "around the base", transform=inset.transAxes, fontsize="x-small",
                       bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})
            axes.indicate_inset_zoom(inset, edgecolor="black")
            targets.append(inset)
        for index, target in enumerate(targets):
            for name, (x, y) in bases:
                target.scatter([x], [y], marker="*", s=260 if index == 0 else 180, c="gold", edgecolors="black",
                               linewidths=1.0, zorder=4, label=f"base {name}" if index == 0 else None)
                if index == 0:
                    target.annotate(name, (x, y), xytext=(6, 6), textcoords="offset points", fontsize="small")
            if (~kept).any():
                target.scatter(placed[~kept, 0], placed[~kept, 1], s=30, marker="x", c="dimgray", linewidths=1.0,
                               zorder=5, label=(f"rejected after relaxation, hull or novelty ({int((~kept).sum())})"
                                                if index == 0 else None))
            if kept.any():
                target.scatter(placed[kept, 0], placed[kept, 1], s=36, facecolors="none", edgecolors="crimson",
                               linewidths=1.4, zorder=6, label=f"kept candidates ({int(kept.sum())})" if index == 0 else None)
        explained = data.get("explained_variance") or [float("nan")] * 2
        axes.set_xlabel(f"PC1 ({100 * explained[0]:.1f} % of latent variance)")
        axes.set_ylabel(f"PC2 ({100 * explained[1]:.1f} % of latent variance)")
        axes.set_title(f"Latent space of the cubic generator's {len(points):,} training cells (PCA)")
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
