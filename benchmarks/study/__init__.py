"""Studies built from several suites: each runs its suites and writes a docs page from the
results (``python -m benchmarks.study.<name>``)."""
