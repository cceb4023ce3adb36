"""The rule engine: the matcher (pure, over Arrow batches) and how a plan is applied to
Spark frames or plain event dicts."""
