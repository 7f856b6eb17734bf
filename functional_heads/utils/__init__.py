"""Plumbing shared by every layer: optional dependencies, errors, atomic files, progress, plotting."""
