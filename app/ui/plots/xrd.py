"""Simulated powder X-ray diffraction of the selected rows, overlaid, with (hkl) on hover."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from app.ui.plots.canvas import PlotWidget

#: Cu Kα (Å), pymatgen's weighted Kα1/Kα2 value.
CU_KA = 1.54184
TWO_THETA_RANGE = (10.0, 90.0)
#: Peaks within this many degrees of the pointer are labelled on hover.
HOVER_TOLERANCE = 0.6


@dataclass
class Pattern:
    """One simulated pattern: peak positions (2θ, degrees), intensities (0–100) and (hkl) labels."""

    name: str
    two_theta: np.ndarray
    intensity: np.ndarray
    hkl: list[str]


def simulate(name: str, structure, wavelength: float = CU_KA) -> Pattern:
    """Powder pattern of ``structure`` at ``wavelength`` (Å) with pymatgen's XRDCalculator."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    pattern = XRDCalculator(wavelength=wavelength).get_pattern(structure, two_theta_range=TWO_THETA_RANGE)
    labels = [", ".join("(" + " ".join(str(i) for i in family["hkl"]) + ")" for family in peak)
              for peak in pattern.hkls]
    return Pattern(name, np.asarray(pattern.x), np.asarray(pattern.y), labels)


def simulate_all(items: list[tuple[str, object]], wavelength: float) -> list[Pattern]:
    """Patterns of (name, structure) pairs (run off the GUI thread)."""
    return [simulate(name, structure, wavelength) for name, structure in items]


class XrdPlot(PlotWidget):
    """Stick patterns of several structures, offset vertically; hover a peak for its (hkl)."""

    def __init__(self, parent=None) -> None:
        super().__init__("Powder XRD", parent)
        self.patterns: list[Pattern] = []
        self._annotation = None
        self.canvas.mpl_connect("motion_notify_event", self._on_hover)

    async def compute(self, records: list, wavelength: float = CU_KA) -> None:
        """Simulate the records' patterns in a thread, then draw them."""
        items = [(r.name, r.get_structure()) for r in records if r.get_structure() is not None]
        skipped = len(records) - len(items)
        self.show_message(f"computing {len(items)} patterns…")
        patterns = await asyncio.get_running_loop().run_in_executor(None, simulate_all, items, wavelength)
        self.draw(patterns, wavelength)
        self.show_message(f"{skipped} rows without a structure left out." if skipped else "")

    def draw(self, patterns: list[Pattern], wavelength: float = CU_KA) -> None:
        self.patterns = patterns
        self.figure.clear()
        axes = self.figure.add_subplot()
        self._axes = axes
        for offset, pattern in enumerate(patterns):
            base = 110.0 * offset
            axes.vlines(pattern.two_theta, base, base + pattern.intensity, colors=f"C{offset % 10}",
                        label=pattern.name, linewidth=1.4)
        axes.set_xlim(*TWO_THETA_RANGE)
        axes.set_xlabel("2θ (degrees)")
        axes.set_ylabel("intensity (normalised, offset per pattern)")
        axes.set_title(f"Simulated powder XRD, λ = {wavelength:.5g} Å")
        if patterns:
            axes.legend(loc="upper right", fontsize="small")
        self._annotation = axes.annotate("", xy=(0, 0), xytext=(8, 8), textcoords="offset points",
                                         bbox={"boxstyle": "round", "fc": "lightyellow"}, visible=False)
        self.table = {"pattern": [], "two_theta_deg": [], "intensity": [], "hkl": []}
        for pattern in patterns:
            self.table["pattern"] += [pattern.name] * len(pattern.two_theta)
            self.table["two_theta_deg"] += [round(float(x), 4) for x in pattern.two_theta]
            self.table["intensity"] += [round(float(y), 3) for y in pattern.intensity]
            self.table["hkl"] += pattern.hkl
        self.canvas.draw_idle()

    def peak_label(self, two_theta: float, height: float) -> str | None:
        """(hkl) of the peak nearest to (2θ, height) on the plot, None if none is close."""
        if not self.patterns:
            return None
        offset = min(max(int(height // 110.0), 0), len(self.patterns) - 1)
        pattern = self.patterns[offset]
        if not len(pattern.two_theta):
            return None
        nearest = int(np.argmin(np.abs(pattern.two_theta - two_theta)))
        if abs(pattern.two_theta[nearest] - two_theta) > HOVER_TOLERANCE:
            return None
        return f"{pattern.name}: 2θ {pattern.two_theta[nearest]:.2f}°, {pattern.hkl[nearest]}"

    def _on_hover(self, event) -> None:
        if self._annotation is None or event.inaxes is None or event.xdata is None:
            return
        label = self.peak_label(event.xdata, event.ydata)
        self._annotation.set_visible(label is not None)
        if label is not None:
            self._annotation.xy = (event.xdata, event.ydata)
            self._annotation.set_text(label)
        self.canvas.draw_idle()
