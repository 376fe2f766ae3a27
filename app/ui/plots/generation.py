"""Generation plots: the filter funnel as bars, the candidates' predicted properties against the target window."""

from __future__ import annotations

import math

import numpy as np

from app.ui.plots.canvas import PlotWidget


class FunnelPlot(PlotWidget):
    """Candidates left after each stage of the funnel (the generator's counts)."""

    def __init__(self, parent=None) -> None:
        super().__init__("Generation funnel", parent)

    def draw(self, funnel: dict[str, int]) -> None:
        from app.engine.generation.settings import FUNNEL_STAGES

        stages = [stage for stage in FUNNEL_STAGES if stage.key in funnel]
        counts = [int(funnel[stage.key]) for stage in stages]
        labels = [stage.label for stage in stages]
        self.figure.clear()
        axes = self.figure.add_subplot()
        positions = np.arange(len(stages))
        bars = axes.barh(positions, counts, color="#3b75af")
        axes.set_yticks(positions, labels)
        axes.invert_yaxis()  # first stage on top, as the funnel reads
        axes.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=3, fontsize="small")
        axes.set_xlabel("candidates")
        axes.set_title("Filter funnel of the last generation")
        axes.set_xlim(0, max(counts + [1]) * 1.15)
        self.table = {"stage": [s.key for s in stages], "label": labels, "count": counts}
        self.canvas.draw_idle()


class PropertyDistributionPlot(PlotWidget):
    """Histograms of the candidates' predicted properties, the target window shaded, the base marked."""

    def __init__(self, parent=None) -> None:
        super().__init__("Candidate property distributions", parent)

    def draw(self, candidates: list, windows: dict, base=None) -> None:
        """``candidates`` and ``base``: records with ``properties``; ``windows``: key → (low, high) or None."""
        from app.engine.core.property_table import PROPERTIES

        shown = [spec for spec in PROPERTIES
                 if any(c.properties.get(spec.key) is not None for c in candidates)]
        self.figure.clear()
        self.table = {"candidate": [c.name for c in candidates]}
        columns = 3
        rows = max(math.ceil(len(shown) / columns), 1)
        self.figure.set_size_inches(9.0, 2.6 * rows)
        for index, spec in enumerate(shown):
            axes = self.figure.add_subplot(rows, columns, index + 1)
            values = np.array([c.properties.get(spec.key) for c in candidates], dtype=object)
            finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
            axes.hist(finite, bins=min(max(len(finite) // 3, 5), 30), color="#7aa6d6", edgecolor="white")
            window = windows.get(spec.key)
            if window:
                low, high = window
                axes.axvspan(low if low is not None else finite.min(initial=0.0),
                             high if high is not None else finite.max(initial=0.0),
                             color="#2e7d32", alpha=0.18, label="target window")
            if base is not None and base.properties.get(spec.key) is not None:
                axes.axvline(base.properties[spec.key], color="#c81e1e", linewidth=1.5, label="base")
            axes.set_xlabel(f"{spec.label} ({spec.unit})" if spec.unit else spec.label, fontsize="small")
            axes.tick_params(labelsize="small")
            if index == 0:
                axes.set_ylabel("candidates")
                if window or base is not None:
                    axes.legend(fontsize="x-small")
            self.table[spec.key] = [None if v is None else float(v) for v in values]
        if not shown:
            self.figure.text(0.5, 0.5, "No predicted candidates yet", ha="center")
        self.canvas.draw_idle()
