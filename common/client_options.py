"""The one place that turns security settings into client options, per client kind.

Kafka is reached by three clients (librdkafka via confluent-kafka, kafka-python, and
Spark's Java client through ``kafka.*`` options) and Elasticsearch by the Python client;
each spells the same TLS/SASL settings differently. Everything that builds a client asks
here, so turning security on is configuration (``SIGSTREAM_KAFKA_*``, ``SIGSTREAM_ES_*``),
never a code change. Pure functions: no client is created here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr

from common.settings import Settings

SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


class SecurityConfigError(ValueError):
    """The security settings are incomplete (e.g. SASL without a username)."""


def _sasl(s: Settings) -> tuple[str, str] | None:
    if "SASL" not in s.kafka_security_protocol.upper():
        return None
    if not s.kafka_sasl_username or s.kafka_sasl_password is None:
        raise SecurityConfigError(
            f"Kafka security protocol {s.kafka_security_protocol} needs "
            "SIGSTREAM_KAFKA_SASL_USERNAME and SIGSTREAM_KAFKA_SASL_PASSWORD"
        )
    return s.kafka_sasl_username, s.kafka_sasl_password.get_secret_value()


def _tls(s: Settings) -> bool:
    return s.kafka_security_protocol.upper() in {"SSL", "SASL_SSL"}


def confluent_kafka_config(s: Settings, *, bootstrap: bool = True) -> dict[str, Any]:
    """librdkafka properties (``Producer``/``Consumer``/``AdminClient``); ``bootstrap=False``
    gives only the security part (for ``EventProducer(servers, ..., **config)``)."""
    config: dict[str, Any] = {"security.protocol": s.kafka_security_protocol.lower()}
    if bootstrap:
        config["bootstrap.servers"] = s.kafka_bootstrap
    sasl = _sasl(s)
    if sasl is not None:
        config.update(
            {
                "sasl.mechanism": s.kafka_sasl_mechanism,
                "sasl.username": sasl[0],
                "sasl.password": sasl[1],
            }
        )
    if _tls(s) and s.kafka_ssl_ca is not None:
        config["ssl.ca.location"] = str(s.kafka_ssl_ca)
    return config


def kafka_python_kwargs(s: Settings) -> dict[str, Any]:
    """kafka-python keyword arguments (``KafkaConsumer``, ``KafkaAdminClient``)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": s.kafka_bootstrap,
        "security_protocol": s.kafka_security_protocol.upper(),
    }
    sasl = _sasl(s)
    if sasl is not None:
        kwargs.update(
            {
                "sasl_mechanism": s.kafka_sasl_mechanism,
                "sasl_plain_username": sasl[0],
                "sasl_plain_password": sasl[1],
            }
        )
    if _tls(s) and s.kafka_ssl_ca is not None:
        kwargs["ssl_cafile"] = str(s.kafka_ssl_ca)
    return kwargs


def spark_kafka_options(s: Settings, *, bootstrap: bool = True) -> dict[str, str]:
    """Options for Spark's Kafka source and sink (Spark hands ``kafka.*`` to the Java client).

    The CA goes in as a PEM trust store, so no JKS file has to be built. ``bootstrap=False``
    leaves the servers out (the job's config carries them separately)."""
    options = {"kafka.security.protocol": s.kafka_security_protocol.upper()}
    if bootstrap:
        options["kafka.bootstrap.servers"] = s.kafka_bootstrap
    sasl = _sasl(s)
    if sasl is not None:
        module = PLAIN_MODULE if s.kafka_sasl_mechanism.upper() == "PLAIN" else SCRAM_MODULE
        for name, value in (("username", sasl[0]), ("password", sasl[1])):
            if '"' in value or "\\" in value:
                raise SecurityConfigError(f"Kafka SASL {name} must not contain quotes")
        options["kafka.sasl.mechanism"] = s.kafka_sasl_mechanism
        options["kafka.sasl.jaas.config"] = (
            f'{module} required username="{sasl[0]}" password="{sasl[1]}";'
        )
    if _tls(s) and s.kafka_ssl_ca is not None:
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = str(s.kafka_ssl_ca)
    return options


def elasticsearch_kwargs(s: Settings) -> dict[str, Any]:
    """``Elasticsearch(...)`` keyword arguments for authentication and TLS (hosts excluded)."""
    kwargs: dict[str, Any] = {}
    if s.es_api_key is not None:
        kwargs["api_key"] = s.es_api_key.get_secret_value()
    elif s.es_username:
        if s.es_password is None:
            raise SecurityConfigError("SIGSTREAM_ES_USERNAME needs SIGSTREAM_ES_PASSWORD")
        kwargs["basic_auth"] = (s.es_username, s.es_password.get_secret_value())
    if s.es_ca is not None:
        kwargs["ca_certs"] = str(s.es_ca)
    return kwargs


AUTH_KEYS = ("basic_auth", "api_key", "bearer_auth", "http_auth")


def merge_es_kwargs(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` wins; an authentication given explicitly replaces the default one."""
    if any(key in given for key in AUTH_KEYS):
        defaults = {k: v for k, v in defaults.items() if k not in AUTH_KEYS}
    return {**defaults, **given}


SECRET_FIELDS = ("kafka_sasl_password", "es_password", "es_api_key")


def as_user(s: Settings, **updates: Any) -> Settings:
    """A copy of ``s`` with other credentials (settings are frozen); plain strings given
    for secret fields are wrapped, so they never show in a repr or a log."""
    for name in SECRET_FIELDS:
        if isinstance(updates.get(name), str):
            updates[name] = SecretStr(updates[name])
    return s.model_copy(update=updates)


# --- Kafka producers ----------------------------------------------------------------------

COMPRESSION = "lz4"


#: What every Kafka producer of the project sets (the ingest client's ``EventProducer``,
#: the gateway's ``KafkaSink``, the detection pass's ``DerivedPublisher``): acks from all
#: in-sync replicas, idempotent retries (no duplicates, order kept), large compressed
#: batches, records up to the gateway's per-event bound.
RELIABLE_PRODUCER: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "batch.size": 512 * 1024,
    "message.max.bytes": 8 * 1024 * 1024,
    "compression.type": COMPRESSION,
}


def producer_config(
    bootstrap_servers: str | Iterable[str],
    security: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """librdkafka properties of a telemetry producer: :data:`RELIABLE_PRODUCER`, the
    client's security properties (``common.client_options.confluent_kafka_config``), the
    servers, then ``overrides`` (any librdkafka property)."""
    servers = (
        bootstrap_servers if isinstance(bootstrap_servers, str) else ",".join(bootstrap_servers)
    )
    return {**RELIABLE_PRODUCER, **(security or {}), "bootstrap.servers": servers, **overrides}
