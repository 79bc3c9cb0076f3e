"""Curation: read raw shards, extract text, filter, redact PII, write chunked documents (`nanoforge curate`)."""
