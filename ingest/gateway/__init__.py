"""The ingest gateway: the authenticated HTTPS front door between sensors and Kafka.

``parse`` (pure: body -> accepted events + rejects with reasons), ``credentials`` (the
per-sensor token store), ``limits`` (token buckets), ``dedupe`` (recent event ids),
``sink`` (Kafka), ``app`` (the HTTP surface), ``tls`` and ``server`` (running it).
See docs/gateway.md.
"""
