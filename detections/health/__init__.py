"""Sensor health: per-sensor sequence, heartbeat and clock state, and the findings it raises.

``summary`` is what the detect tasks emit per sensor (one read of the events), ``state``
is the pure state machine over those summaries, ``findings`` turns its observations into
triage findings, ``query`` runs it as a Spark streaming query over the summaries topic.
"""
