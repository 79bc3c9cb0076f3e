"""Deduplication: MinHash signatures, fuzzy dedup across workers, n-gram decontamination against eval sets."""
