"""Sigstream: sensor telemetry -> Kafka -> Spark Sigma detection -> Elasticsearch findings."""

__version__ = "0.1.0"
