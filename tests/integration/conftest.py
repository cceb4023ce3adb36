"""Integration tests use the session-wide ``services`` and ``spark`` fixtures of
tests/conftest.py (shared with the e2e tests)."""
