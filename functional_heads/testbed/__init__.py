"""Tiny models for tests, scripts and training: word-level tokenizers, tiny random-weight models of the
real architectures, every image-text family transformers registers, and the bundled trained models."""
