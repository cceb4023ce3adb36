"""Pure parts of the ``secure`` profile: certificates, secrets, configs, roles and ACLs.

Nothing here starts a process or talks to a service, so all of it is unit-tested
(tests/unit/test_infra_security.py); ``infra.secure`` writes what these functions return.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra import config

PROFILE = "secure"
SCRAM = "SCRAM-SHA-512"
KAFKA_ADMIN = "admin"
KAFKA_GATEWAY = "gateway"
KAFKA_JOB = "job"
KAFKA_USERS = (KAFKA_ADMIN, KAFKA_GATEWAY, KAFKA_JOB)
ES_SUPERUSER = "elastic"
ES_JOB = "sigstream_job"
ES_API = "sigstream_api"
ES_ANALYST = "sigstream_analyst"
ES_USERS = (ES_JOB, ES_API, ES_ANALYST)
# Spark's Kafka source names its consumer groups spark-kafka-source-<uuid>-...
SPARK_GROUP_PREFIX = "spark-kafka-source-"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True)
class SecureSpec:
    """Ports of the secure profile: away from the default (9092/9093/9200) and cluster ones."""

    host: str = "127.0.0.1"
    kafka_port: int = 19492
    kafka_controller_port: int = 19493
    es_http_port: int = 19400
    es_transport_port: int = 19500
    kafka_heap: str = "384m"
    es_heap: str = "512m"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def es_url(self) -> str:
        return f"https://{self.host}:{self.es_http_port}"


# Secrets -------------------------------------------------------------------------------


def new_password() -> str:
    """32 URL-safe random characters: no quotes or backslashes, so JAAS and CLI args are safe."""
    return secrets.token_urlsafe(24)


def new_passwords() -> dict[str, dict[str, str]]:
    """One random password per Kafka and Elasticsearch user (and Kafka's controller link)."""
    return {
        "kafka": {name: new_password() for name in (*KAFKA_USERS, "controller")},
        "elasticsearch": {name: new_password() for name in (ES_SUPERUSER, *ES_USERS)},
    }


def write_secret(path: Path, data: bytes | str) -> None:
    """Create or replace a file readable by its owner only (0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    tmp.replace(path)


def render_passwords(passwords: Mapping[str, Mapping[str, str]]) -> str:
    return json.dumps(passwords, indent=2, sort_keys=True) + "\n"


# Certificates --------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its unencrypted PKCS#8 PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8 unencrypted: the only private-key form Kafka's PEM key store reads without a
    # key password, and one Elasticsearch reads too.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_ca(common_name: str = "Sigstream local CA", days: int = 825) -> KeyPair:
    """A self-signed CA (P-256) that signs the profile's server certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def server_cert(ca: KeyPair, common_name: str, hosts: list[str], days: int = 397) -> KeyPair:
    """A server (and client, for node-to-node TLS) certificate for ``hosts``, signed by ``ca``."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


# Kafka ---------------------------------------------------------------------------------


def _jaas(module: str, username: str, password: str, **users: str) -> str:
    extra = "".join(f' user_{name}="{secret}"' for name, secret in users.items())
    return f'{module} required username="{username}" password="{password}"{extra};'


SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def kafka_secure_properties(
    spec: SecureSpec,
    *,
    log_dir: Path,
    keystore: Path,
    truststore: Path,
    passwords: Mapping[str, str],
    partitions: int,
) -> dict[str, str]:
    """``server.properties`` of a single KRaft node with SASL_SSL (SCRAM-SHA-512) for every
    client and the broker itself, and a loopback controller listener with SASL PLAIN (SCRAM
    credentials live in the metadata log, which the controller must read before it could
    check them, so KRaft does not support SCRAM there). ``StandardAuthorizer`` denies what
    no ACL allows; only ``admin`` is a super user."""
    host = spec.host
    admin = passwords[KAFKA_ADMIN]
    # The single node's settings (internal topics at RF 1, threads, retention), with the
    # listeners, SASL, TLS and authorizer replaced.
    props = config.kafka_server_properties(
        host=host,
        port=spec.kafka_port,
        controller_port=spec.kafka_controller_port,
        log_dir=log_dir,
        partitions=partitions,
    )
    props.update(
        {
            "listeners": f"SASL_SSL://{host}:{spec.kafka_port},"
            f"CONTROLLER://{host}:{spec.kafka_controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{spec.kafka_port}",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM,
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": _jaas(
                PLAIN_MODULE, KAFKA_ADMIN, passwords["controller"], admin=passwords["controller"]
            ),
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": _jaas(
                SCRAM_MODULE, KAFKA_ADMIN, admin
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(truststore),
            "ssl.client.auth": "none",
            "ssl.endpoint.identification.algorithm": "https",
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "super.users": f"User:{KAFKA_ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
            "auto.create.topics.enable": "false",
        }
    )
    return props


def scram_format_args(passwords: Mapping[str, str]) -> list[str]:
    """``StorageTool format`` arguments that create every SCRAM user in the first metadata."""
    args: list[str] = []
    for name in KAFKA_USERS:
        args += ["--add-scram", f"{SCRAM}=[name={name},password={passwords[name]}]"]
    return args


@dataclass(frozen=True)
class AclSpec:
    """One ALLOW ACL: ``principal`` may ``operation`` on ``resource`` (``pattern``)."""

    principal: str
    resource: str  # topic | group | cluster
    name: str
    operation: str  # read | write | describe | idempotent_write
    pattern: str = "literal"  # literal | prefixed


def kafka_acls(
    events_topic: str,
    dlq_topic: str,
    summaries_topic: str | None = None,
    matches_topic: str | None = None,
) -> list[AclSpec]:
    """The gateway writes events and rejects; the job reads events (its groups are Spark's
    generated ``spark-kafka-source-*``, hence a prefixed ACL) and writes rejects. Nothing
    else is allowed to anyone but ``admin``. The job also writes and reads its internal
    derived topics (sensor summaries, correlation matches)."""
    gateway, job = f"User:{KAFKA_GATEWAY}", f"User:{KAFKA_JOB}"
    return [
        AclSpec(gateway, "topic", events_topic, "write"),
        AclSpec(gateway, "topic", dlq_topic, "write"),
        AclSpec(gateway, "cluster", "kafka-cluster", "idempotent_write"),
        AclSpec(job, "topic", events_topic, "read"),
        AclSpec(job, "group", SPARK_GROUP_PREFIX, "read", "prefixed"),
        AclSpec(job, "topic", dlq_topic, "write"),
        AclSpec(job, "cluster", "kafka-cluster", "idempotent_write"),
    ] + [
        AclSpec(job, "topic", topic, operation)
        for topic in (summaries_topic, matches_topic)
        if topic
        for operation in ("write", "read")
    ]


# Elasticsearch -------------------------------------------------------------------------

CERTS_DIR = "certs"


def es_secure_settings(
    spec: SecureSpec, *, data_dir: Path, logs_dir: Path, cluster_name: str = "sigstream-secure"
) -> dict[str, object]:
    """``elasticsearch.yml`` with security on and TLS on HTTP and transport (PEM files in
    ``config/certs``, relative paths resolve against the config dir)."""
    ssl = {
        "key": f"{CERTS_DIR}/node.key",
        "certificate": f"{CERTS_DIR}/node.crt",
        "certificate_authorities": [f"{CERTS_DIR}/ca.crt"],
    }
    values: dict[str, object] = {
        "cluster.name": cluster_name,
        "node.name": f"{cluster_name}-1",
        "discovery.type": "single-node",
        "network.host": spec.host,
        "http.port": spec.es_http_port,
        "transport.port": spec.es_transport_port,
        "path.data": str(data_dir),
        "path.logs": str(logs_dir),
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "action.auto_create_index": True,
        "xpack.security.enabled": True,
        "xpack.security.http.ssl.enabled": True,
        "xpack.security.transport.ssl.enabled": True,
        "xpack.security.transport.ssl.verification_mode": "certificate",
        # Tries (and fails, every few seconds) to store built-in roles in the .security
        # index, which this distribution cannot create (see below).
        "logger.org.elasticsearch.xpack.security.support.QueryableBuiltInRolesSynchronizer": (
            "error"
        ),
    }
    for layer in ("http", "transport"):
        for key, value in ssl.items():
            values[f"xpack.security.{layer}.ssl.{key}"] = value
    return values


def es_roles(
    findings: str, events: str, shadow: str, sensors: str = "sigstream-sensors"
) -> dict[str, dict[str, object]]:
    """Role bodies for ``PUT _security/role/<name>``.

    The job creates and writes findings (match documents, groups, the shadow index) and
    events, reads suppressions, and keeps the index templates it ships current. The API
    reads and updates findings and suppressions (triage state) and reads events. Analysts
    only read. The job's companion queries write the correlation stage's late-match reports
    and the sensor-health index."""
    findings_all = [findings, f"{findings}-*", shadow, f"{shadow}-*"]
    events_all = [events, f"{events}-*"]
    suppressions = f"{findings}-suppressions"
    # ``manage``: the job keeps the generated mappings current when it starts (put_mapping);
    # ``write`` alone will stop allowing that in Elasticsearch 9. It does not allow deleting
    # an index (``delete_index``) or writing suppressions' documents.
    job_write = ["create_index", "write", "read", "view_index_metadata", "manage"]
    return {
        ES_JOB: {
            "cluster": ["monitor", "manage_index_templates"],
            "indices": [
                {
                    "names": [
                        findings,
                        f"{findings}-0*",
                        f"{findings}-groups",
                        f"{findings}-correlation-late",
                        shadow,
                        *events_all,
                        sensors,
                    ],
                    "privileges": job_write,
                },
                {
                    "names": [suppressions],
                    "privileges": ["create_index", "read", "view_index_metadata", "manage"],
                },
            ],
        },
        ES_API: {
            "cluster": ["monitor"],
            "indices": [
                {
                    "names": findings_all,
                    "privileges": ["read", "write", "view_index_metadata", "maintenance"],
                },
                {"names": [*events_all, sensors], "privileges": ["read", "view_index_metadata"]},
            ],
        },
        ES_ANALYST: {
            "cluster": [],
            "indices": [
                {
                    "names": [*findings_all, *events_all, sensors],
                    "privileges": ["read", "view_index_metadata"],
                }
            ],
        },
    }


def client_env(
    spec: SecureSpec,
    secrets_dir: Path,
    *,
    kafka_user: str | None,
    es_user: str | None,
    passwords: Mapping[str, Mapping[str, str]] | None,
) -> dict[str, str]:
    """``SIGSTREAM_*`` variables that point a client at the profile as one user each.

    Passwords are included only when ``passwords`` is given (``infra env --show-secrets``)."""
    env = {
        "SIGSTREAM_KAFKA_BOOTSTRAP": spec.kafka_bootstrap,
        "SIGSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SIGSTREAM_KAFKA_SASL_MECHANISM": SCRAM,
        "SIGSTREAM_KAFKA_SSL_CA": str(secrets_dir / "ca.crt"),
        "SIGSTREAM_ES_HOSTS": json.dumps([spec.es_url]),
        "SIGSTREAM_ES_CA": str(secrets_dir / "ca.crt"),
    }
    if kafka_user:
        env["SIGSTREAM_KAFKA_SASL_USERNAME"] = kafka_user
        if passwords is not None:
            env["SIGSTREAM_KAFKA_SASL_PASSWORD"] = passwords["kafka"][kafka_user]
    if es_user:
        env["SIGSTREAM_ES_USERNAME"] = es_user
        if passwords is not None:
            env["SIGSTREAM_ES_PASSWORD"] = passwords["elasticsearch"][es_user]
    return env


# The integ-test-zip has no analysis-common module, which the ``.security`` index needs, so
# the native realm (and with it the user/role APIs and API keys) cannot work: users and
# roles live in the file realm (``users``, ``users_roles``, ``roles.yml`` in the config dir),
# which Elasticsearch reloads within seconds when the files change.
PBKDF2_COST = 10_000


def es_password_hash(password: str, salt: bytes | None = None) -> str:
    """A file-realm hash in Elasticsearch's ``{PBKDF2}`` form (PBKDF2-HMAC-SHA512, 256 bits)."""
    salt = salt if salt is not None else secrets.token_bytes(32)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_COST, dklen=32)
    b64 = base64.b64encode
    return f"{{PBKDF2}}{PBKDF2_COST}${b64(salt).decode()}${b64(digest).decode()}"


def render_users_file(passwords: Mapping[str, str]) -> str:
    """``config/users``: ``name:hash`` per line, for the job, API and analyst users."""
    return "".join(f"{name}:{es_password_hash(passwords[name])}\n" for name in ES_USERS)


def render_users_roles() -> str:
    """``config/users_roles``: ``role:user`` per line (each user has the role of its name)."""
    return "".join(f"{name}:{name}\n" for name in ES_USERS)


def render_roles_yml(roles: Mapping[str, Mapping[str, object]]) -> str:
    """``config/roles.yml``: JSON is valid YAML, so quoting is always right."""
    return "".join(f"{json.dumps(name)}: {json.dumps(body)}\n" for name, body in roles.items())
