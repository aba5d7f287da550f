"""Benchmarks: ingest, read by id and search, measured against a real server process."""
