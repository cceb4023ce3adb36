"""Sensor health: per-sensor sequence, heartbeat and clock state, and the findings it raises.

``state`` is the pure state machine, ``findings`` turns its observations into triage
findings, ``query`` runs it as a Spark streaming query beside the detect job.
"""
