"""The window's Plots menu: powder XRD of the selected rows, funnel, property distributions, models."""

from __future__ import annotations

import asyncio
import logging

from PySide6.QtWidgets import QInputDialog

logger = logging.getLogger(__name__)


class PlotsMenu:
    """Adds a Plots menu to ``window`` (a :class:`~app.ui.main_window.MainWindow`) and keeps the open plots.

    It remembers the last generation's funnel (from the controller's ``generation_finished``).
    """

    def __init__(self, window) -> None:
        self.window = window
        self.open_plots: list = []
        self.last_funnel: dict | None = None
        window.controller.generation_finished.connect(self._remember_funnel)
        menu = window.menuBar().addMenu("&Plots")
        for text, slot in (("Powder &XRD of the selected rows…", self.show_xrd),
                           ("Generation &funnel", self.show_funnel),
                           ("Candidate property &distributions", self.show_distributions),
                           ("&Latent map", self.show_latent_map),
                           ("&Models…", self.show_models)):
            menu.addAction(text).triggered.connect(lambda _checked=False, s=slot: s())
        self.menu = menu

    def _remember_funnel(self, funnel, _note: str) -> None:
        if funnel is not None:
            self.last_funnel = dict(funnel)

    def _keep(self, plot):
        self.open_plots = [p for p in self.open_plots if p.isVisible()] + [plot]
        plot.show()
        return plot

    def _selected_rows(self) -> list:
        rows = self.window.results.selected_records() or self.window.library.selected_records()
        return [r for r in rows if r.get_structure() is not None]

    def show_xrd(self, wavelength: float | None = None, ask: bool = True):
        """Simulated patterns of the selected rows (Cu Kα unless another wavelength is entered)."""
        from app.ui.plots.xrd import CU_KA, XrdPlot

        rows = self._selected_rows()
        if not rows:
            self.window.notifier.status("Select rows with structures to simulate their powder patterns.")
            return None
        if wavelength is None and ask:
            wavelength, ok = QInputDialog.getDouble(self.window, "Powder XRD", "Wavelength (Å; Cu Kα = 1.54184):",
                                                    CU_KA, 0.1, 5.0, 5)
            if not ok:
                return None
        plot = self._keep(XrdPlot())
        plot.task = asyncio.ensure_future(plot.compute(rows, wavelength or CU_KA))
        return plot

    def show_funnel(self):
        from app.ui.plots.generation import FunnelPlot

        if self.last_funnel is None:
            self.window.notifier.status("No generation has finished yet.")
            return None
        plot = FunnelPlot()
        plot.draw(self.last_funnel)
        return self._keep(plot)

    def show_distributions(self):
        from app.ui.plots.generation import PropertyDistributionPlot

        candidates = [r for r in self.window.model.records if r.is_candidate and r.kept and r.properties]
        if not candidates:
            self.window.notifier.status("No kept candidates to plot.")
            return None
        plot = PropertyDistributionPlot()
        plot.draw(candidates, self.window.targets.windows(), getattr(self.window.generate_panel, "base", None))
        return self._keep(plot)

    def show_latent_map(self):
        """The training cells' latent map with the selected library rows (bases) and the kept candidates."""
        from app.ui.plots.latent import LatentMapPlot

        window = self.window
        bases = [r for r in window.library.selected_records() if r.get_structure() is not None]
        candidates = [r for r in window.model.records if r.is_candidate and (r.kept or r.latent is not None)]
        plot = self._keep(LatentMapPlot())
        plot.task = asyncio.ensure_future(plot.compute(window.client, bases, candidates))
        return plot

    def show_models(self):
        from app.ui.plots.models import open_models_dialog

        return self._keep(open_models_dialog())
