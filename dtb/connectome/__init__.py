"""Connectome data and loaders, and the recipes built from them (whole brain, PD14)."""
