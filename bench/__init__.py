"""Benchmarks for Sigstream (issue 4): engine throughput, end-to-end latency, ingest rate.

They print numbers and never assert timings; the test suite must not import this package.
Run them with ``make bench`` (or ``python -m bench.engine|latency|ingest --help``).
"""
