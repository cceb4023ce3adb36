"""What sensors use to ship telemetry: adapters from real log formats, the Kafka producer
(valid events to ``telemetry.events``, rejects to ``telemetry.dlq`` with the reason) and the
replay tool."""
