"""Screening campaigns: many generation runs on a Dask cluster."""
