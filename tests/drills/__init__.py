"""Fault drills (issue 8): faults injected mid-replay on a private stack, exact counts."""
