"""Datasets before training: manifests and their checks, the built-in generator, the split and
preprocessing. Never reads predictions."""
