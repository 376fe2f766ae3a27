"""Plots embedded in the window: matplotlib's Qt backend (QtAgg).

matplotlib rather than pyqtgraph: it is already installed with pymatgen, writes PNG and SVG
itself, and draws the publication-style figures designers compare (powder patterns, parity
plots). Every plot exports its figure (PNG/SVG) and its data (CSV).
"""
