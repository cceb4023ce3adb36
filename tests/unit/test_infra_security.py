"""The secure profile's pure parts: certificates, secrets, Kafka/ES configs, roles, ACLs."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from infra import security as sec


def test_server_cert_is_signed_by_the_ca_and_names_loopback() -> None:
    ca = sec.new_ca()
    leaf = sec.server_cert(ca, "sigstream-kafka", ["127.0.0.1", "localhost"])
    cert = leaf.certificate
    ca_key = ca.certificate.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    # Raises InvalidSignature if the CA did not sign it.
    ca_key.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Kafka's PEM key store reads unencrypted PKCS#8 only.
    assert leaf.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_write_secret_is_owner_only_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "secrets" / "passwords.json"
    sec.write_secret(target, "one")
    sec.write_secret(target, b"two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not list(target.parent.glob("*.tmp"))


def test_passwords_are_random_and_jaas_safe() -> None:
    first, second = sec.new_passwords(), sec.new_passwords()
    assert set(first["kafka"]) == {"admin", "gateway", "job", "controller"}
    assert set(first["elasticsearch"]) == {"elastic", *sec.ES_USERS}
    assert first["kafka"]["admin"] != second["kafka"]["admin"]
    for group in first.values():
        for value in group.values():
            assert len(value) >= 32 and not set(value) & set("\"'\\ ;=[],")


def _props(tmp_path: Path) -> dict[str, str]:
    pw = {"admin": "a" * 32, "gateway": "g" * 32, "job": "j" * 32, "controller": "c" * 32}
    return sec.kafka_secure_properties(
        sec.SecureSpec(),
        log_dir=tmp_path / "data",
        keystore=tmp_path / "kafka.pem",
        truststore=tmp_path / "ca.crt",
        passwords=pw,
        partitions=2,
    )


def test_kafka_has_only_sasl_ssl_for_clients_and_an_authorizer(tmp_path: Path) -> None:
    props = _props(tmp_path)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19492,CONTROLLER://127.0.0.1:19493"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:19492"
    assert "PLAINTEXT:" not in props["listener.security.protocol.map"].replace("SASL_", "")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:admin"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["auto.create.topics.enable"] == "false"
    assert 'password="cccc' in props["listener.name.controller.plain.sasl.jaas.config"]
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"


def test_scram_users_are_added_at_format_time() -> None:
    args = sec.scram_format_args({"admin": "A", "gateway": "G", "job": "J"})
    assert args == [
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=A]",
        "--add-scram",
        "SCRAM-SHA-512=[name=gateway,password=G]",
        "--add-scram",
        "SCRAM-SHA-512=[name=job,password=J]",
    ]


def test_acls_gateway_writes_only_job_reads_events_with_spark_groups() -> None:
    acls = sec.kafka_acls("ev", "dlq")
    gateway = {(a.resource, a.name, a.operation) for a in acls if a.principal == "User:gateway"}
    assert gateway == {
        ("topic", "ev", "write"),
        ("topic", "dlq", "write"),
        ("cluster", "kafka-cluster", "idempotent_write"),
    }
    job = {(a.resource, a.name, a.operation, a.pattern) for a in acls if a.principal == "User:job"}
    assert ("topic", "ev", "read", "literal") in job
    assert ("group", "spark-kafka-source-", "read", "prefixed") in job
    assert ("topic", "dlq", "write", "literal") in job
    assert not any(
        a.operation in {"read", "describe"} and a.principal == "User:gateway" for a in acls
    )
    assert {a.principal for a in acls} == {"User:gateway", "User:job"}


def test_es_settings_turn_security_and_tls_on(tmp_path: Path) -> None:
    values = sec.es_secure_settings(
        sec.SecureSpec(), data_dir=tmp_path / "d", logs_dir=tmp_path / "l"
    )
    assert values["xpack.security.enabled"] is True
    assert values["xpack.security.http.ssl.enabled"] is True
    assert values["xpack.security.transport.ssl.enabled"] is True
    assert values["http.port"] == 19400 and values["transport.port"] == 19500
    assert values["xpack.security.http.ssl.certificate_authorities"] == ["certs/ca.crt"]


def test_roles_analyst_reads_job_writes_suppressions_read_only() -> None:
    roles = sec.es_roles("f", "e", "f-shadow")
    analyst = roles["sigstream_analyst"]["indices"]
    assert all(set(entry["privileges"]) <= {"read", "view_index_metadata"} for entry in analyst)
    job = roles["sigstream_job"]["indices"]
    writable = {n for entry in job if "write" in entry["privileges"] for n in entry["names"]}
    assert {"f", "f-0*", "f-groups", "f-correlation-late", "e", "sigstream-sensors"} <= writable
    assert "f-suppressions" not in writable
    api = roles["sigstream_api"]["indices"]
    assert any("write" in entry["privileges"] and "f" in entry["names"] for entry in api)


def test_file_realm_hash_matches_elasticsearch_pbkdf2_format() -> None:
    salt = bytes(range(32))
    value = sec.es_password_hash("s3cret", salt)
    prefix, cost_salt, digest = value.split("$")[0], value.split("$")[1], value.split("$")[2]
    assert prefix == "{PBKDF2}10000"
    assert base64.b64decode(cost_salt) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 10_000, dklen=32)
    assert base64.b64decode(digest) == expected


def test_realm_files_list_every_user_once() -> None:
    pw = {name: "x" * 32 for name in sec.ES_USERS}
    users = sec.render_users_file(pw).splitlines()
    assert [line.split(":")[0] for line in users] == list(sec.ES_USERS)
    assert "x" * 32 not in sec.render_users_file(pw)  # hashed, never clear text
    assert sec.render_users_roles().splitlines()[0] == "sigstream_job:sigstream_job"
    roles_text = sec.render_roles_yml(sec.es_roles("f", "e", "s"))
    first = roles_text.splitlines()[0]
    name, body = first.split(": ", 1)
    assert json.loads(name) == "sigstream_job" and "indices" in json.loads(body)


@pytest.mark.parametrize("show", [False, True])
def test_client_env_prints_passwords_only_on_request(tmp_path: Path, show: bool) -> None:
    pw = sec.new_passwords()
    env = sec.client_env(
        sec.SecureSpec(),
        tmp_path,
        kafka_user="job",
        es_user="sigstream_job",
        passwords=pw if show else None,
    )
    assert env["SIGSTREAM_KAFKA_BOOTSTRAP"] == "127.0.0.1:19492"
    assert json.loads(env["SIGSTREAM_ES_HOSTS"]) == ["https://127.0.0.1:19400"]
    assert ("SIGSTREAM_KAFKA_SASL_PASSWORD" in env) is show
    assert ("SIGSTREAM_ES_PASSWORD" in env) is show
