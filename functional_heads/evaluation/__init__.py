"""Evaluation: benchmarks, scorers and runs. Uses the method core; the core knows nothing of it."""
