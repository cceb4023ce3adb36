"""Fetch and run Sigstream's real services on one machine.

Kafka (KRaft, single node) and Elasticsearch (single node) run as plain child processes
from artifacts fetched once from Maven Central, so a laptop, CI and a developer box all get
the same versions without Docker. ``infra.services`` is the entry point;
``sigstream.commands.infra`` wraps it as ``sigstream infra ...``.
"""
