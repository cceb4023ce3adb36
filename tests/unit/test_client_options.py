"""Security settings -> each client's options (one place, common/client_options.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.client_options import (
    SecurityConfigError,
    as_user,
    confluent_kafka_config,
    elasticsearch_kwargs,
    kafka_python_kwargs,
    merge_es_kwargs,
    spark_kafka_options,
)
from common.settings import Settings


def secured() -> Settings:
    return as_user(
        Settings(),
        kafka_bootstrap="127.0.0.1:19492",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="job",
        kafka_sasl_password="pw",
        kafka_ssl_ca=Path("/ca.crt"),
        es_username="sigstream_job",
        es_password="espw",
        es_ca=Path("/ca.crt"),
    )


def test_defaults_are_plaintext_without_auth() -> None:
    s = Settings()
    assert confluent_kafka_config(s) == {
        "bootstrap.servers": s.kafka_bootstrap,
        "security.protocol": "plaintext",
    }
    assert spark_kafka_options(s, bootstrap=False) == {"kafka.security.protocol": "PLAINTEXT"}
    assert elasticsearch_kwargs(s) == {}


def test_sasl_ssl_for_each_kafka_client() -> None:
    s = secured()
    assert confluent_kafka_config(s, bootstrap=False) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "job",
        "sasl.password": "pw",
        "ssl.ca.location": "/ca.crt",
    }
    kp = kafka_python_kwargs(s)
    assert kp["security_protocol"] == "SASL_SSL" and kp["sasl_plain_password"] == "pw"
    assert kp["ssl_cafile"] == "/ca.crt"
    spark = spark_kafka_options(s)
    assert spark["kafka.bootstrap.servers"] == "127.0.0.1:19492"
    assert spark["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="job" password="pw";'
    )
    assert spark["kafka.ssl.truststore.type"] == "PEM"
    assert spark["kafka.ssl.truststore.location"] == "/ca.crt"


def test_sasl_without_credentials_is_a_clear_error() -> None:
    s = Settings(kafka_security_protocol="SASL_SSL")
    with pytest.raises(SecurityConfigError, match="SASL_USERNAME"):
        confluent_kafka_config(s)


def test_quotes_cannot_break_out_of_the_jaas_line() -> None:
    s = as_user(secured(), kafka_sasl_password='x" user_admin="y')
    with pytest.raises(SecurityConfigError, match="quotes"):
        spark_kafka_options(s)


def test_elasticsearch_basic_auth_or_api_key_and_ca() -> None:
    assert elasticsearch_kwargs(secured()) == {
        "basic_auth": ("sigstream_job", "espw"),
        "ca_certs": "/ca.crt",
    }
    keyed = as_user(secured(), es_api_key="k")
    assert elasticsearch_kwargs(keyed)["api_key"] == "k"
    assert "basic_auth" not in elasticsearch_kwargs(keyed)


def test_explicit_auth_replaces_the_configured_one() -> None:
    merged = merge_es_kwargs(elasticsearch_kwargs(secured()), {"api_key": "other"})
    assert merged == {"api_key": "other", "ca_certs": "/ca.crt"}


def test_secrets_never_show_in_repr() -> None:
    assert "espw" not in repr(secured()) and "'pw'" not in repr(secured())
