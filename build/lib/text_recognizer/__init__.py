"""Apparel classifier library: datasets, networks, models and the preprocessing they share."""
