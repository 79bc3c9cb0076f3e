"""Shared plumbing every stage uses: config parsing, artifacts and lineage, Ray runtime, recipes, dataset loading,
artifact cards.

Imports no stage and no phase module (tests/test_layout.py keeps it so)."""
