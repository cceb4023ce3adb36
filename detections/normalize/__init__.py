"""The normalizing stage: raw shipper records from the ``telemetry.raw.<format>`` topics to
schema events on the events topic (docs/normalize.md)."""
