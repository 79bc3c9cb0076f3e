"""Scoring: quality classifiers and Nemotron-CC quality buckets (`nanoforge quality`, `train-quality-classifier`)."""
