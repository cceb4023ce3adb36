"""Canaries (docs/canaries.md): events built from each deployed rule's true-positive
tests, injected through the real path (gateway -> Kafka -> detection job) under a reserved
tenant, prove that every rule still fires end to end.

``templates`` finds the tests, ``build`` makes a round's events (pure), ``evaluate`` judges
a round and names the likely cause of a silence (pure), ``finding_docs`` is the
"rule not firing" finding (pure); ``inject`` (gateway), ``store`` (Elasticsearch) and
``runner`` (a round, the schedule) are the edges.
"""
