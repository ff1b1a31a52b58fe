"""Benchmarks against the real sandbox (``make bench``); not collected by pytest."""
