"""Composition generation and property prediction (DING)."""
