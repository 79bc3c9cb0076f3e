"""Rephrasing: Nemotron-CC synthetic documents from curated ones: tasks and prompts, pieces, post-filters
(`rephrase`)."""
