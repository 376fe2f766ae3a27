"""Stability of crystals: relaxation and energy above the convex hull."""
