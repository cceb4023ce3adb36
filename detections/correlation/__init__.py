"""Sigma correlation rules (event_count, value_count, temporal, temporal_ordered) over the
matches of their base rules, as a stateful streaming query beside the detect query.

``model`` is the compiled form, ``compile`` builds it from Sigma YAML, ``state`` is the pure
per-key state machine (all the semantics), ``query`` runs it on Spark. See
docs/correlations.md.
"""
