"""Shared fixtures of the test suite (the repo root is on sys.path through pytest's pythonpath setting)."""
