"""The ``secure`` profile: Kafka and Elasticsearch as production would run them, on loopback.

Kafka (one KRaft node) on 19492 with a SASL_SSL listener (SCRAM-SHA-512), a SASL PLAIN
controller listener on 19493, ``StandardAuthorizer`` and ACLs; Elasticsearch on 19400
(transport 19500) with security on, TLS on HTTP and transport, and roles and users for the
job, the API and analysts. Everything lives under ``<run_dir>/secure/`` (Elasticsearch
possibly under the /var/lib fallback, as for the other profiles), secrets in
``<run_dir>/secure/secrets/`` (0700, files 0600), generated on the first ``up``. It never
touches the default profile's processes, ports or data. Pure parts: ``infra.security``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.client_options import as_user
from common.settings import Settings, get_settings
from infra import config, kafka
from infra import elasticsearch as es
from infra import security as sec
from infra import services as single
from infra.proc import (
    ServiceError,
    ServiceStatus,
    exited_during_startup,
    fail,
    pid_alive,
    port_open,
    progress,
    rotate,
    running_pid,
    spawn,
    terminate,
)

KAFKA = "kafka"
ELASTICSEARCH = "elasticsearch"
ES_CLUSTER = "sigstream-secure"

_launchers: dict[Path, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class SecureLayout:
    """Folders and files of the profile."""

    root: Path
    es_root: Path

    @classmethod
    def of(cls, settings: Settings) -> SecureLayout:
        root = settings.run_dir / sec.PROFILE
        return cls(root, _es_root(settings, root))

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def passwords(self) -> Path:
        return self.secrets / "passwords.json"

    @property
    def ca_crt(self) -> Path:
        return self.secrets / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.secrets / "ca.key"

    @property
    def kafka_keystore(self) -> Path:
        """Kafka's PEM key store: private key then certificate, one file."""
        return self.secrets / "kafka.pem"

    @property
    def node_crt(self) -> Path:
        return self.secrets / "es-node.crt"

    @property
    def node_key(self) -> Path:
        return self.secrets / "es-node.key"

    @property
    def kafka_run(self) -> Path:
        return self.root / "kafka"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_run / "data"

    @property
    def kafka_log(self) -> Path:
        return self.kafka_run / "kafka.log"

    @property
    def kafka_pid(self) -> Path:
        return self.kafka_run / "kafka.pid"

    @property
    def es_conf(self) -> Path:
        return self.es_root / "config"

    @property
    def es_data(self) -> Path:
        return self.es_root / "data"

    @property
    def es_logs(self) -> Path:
        return self.es_root / "logs"

    @property
    def es_tmp(self) -> Path:
        return self.es_root / "tmp"

    @property
    def es_pid(self) -> Path:
        return self.es_root / "elasticsearch.pid"

    @property
    def es_launcher_log(self) -> Path:
        return self.es_root / "launcher.log"

    @property
    def es_log(self) -> Path:
        return self.es_logs / f"{ES_CLUSTER}.log"


def _es_root(settings: Settings, root: Path) -> Path:
    """Beside Kafka's, unless the unprivileged ES user cannot reach it (see infra/README)."""
    default = root / "elasticsearch"
    if settings.es_root is not None:
        return settings.es_root / sec.PROFILE
    if not es.runs_as_other_user():
        return default
    ids = es._user_ids(settings.es_user) or (-1, [])
    if config.can_traverse(default, ids[0], ids[1]):
        return default
    return config.es_fallback_root(settings.cache_dir) / sec.PROFILE


def _ctx(settings: Settings | None) -> tuple[Settings, SecureLayout]:
    cfg = settings or get_settings()
    return cfg, SecureLayout.of(cfg)


# Secrets -------------------------------------------------------------------------------


def ensure_secrets(where: SecureLayout, spec: sec.SecureSpec) -> dict[str, dict[str, str]]:
    """Passwords, CA and server certificates: generated once, kept across restarts."""
    where.secrets.mkdir(parents=True, exist_ok=True)
    where.secrets.chmod(0o700)
    if not where.passwords.exists():
        progress(f"generating passwords into {where.passwords} (0600)")
        sec.write_secret(where.passwords, sec.render_passwords(sec.new_passwords()))
    if not where.ca_crt.exists() or not where.ca_key.exists():
        progress("generating the profile's CA")
        ca = sec.new_ca()
        sec.write_secret(where.ca_key, ca.key_pem)
        sec.write_secret(where.ca_crt, ca.cert_pem)
        for stale in (where.kafka_keystore, where.node_crt, where.node_key):
            stale.unlink(missing_ok=True)
    if not where.kafka_keystore.exists() or not where.node_crt.exists():
        renew_server_certs(where, spec)
    return load_passwords(where)


def renew_server_certs(where: SecureLayout, spec: sec.SecureSpec) -> None:
    """New Kafka and Elasticsearch server certificates from the profile's CA."""
    ca = sec.KeyPair(where.ca_crt.read_bytes(), where.ca_key.read_bytes())
    hosts = sorted({spec.host, "127.0.0.1", "localhost"})
    broker = sec.server_cert(ca, "sigstream-kafka", hosts)
    sec.write_secret(where.kafka_keystore, broker.key_pem + broker.cert_pem)
    node = sec.server_cert(ca, "sigstream-es", hosts)
    sec.write_secret(where.node_key, node.key_pem)
    sec.write_secret(where.node_crt, node.cert_pem)
    progress("issued server certificates for Kafka and Elasticsearch")


def load_passwords(where: SecureLayout) -> dict[str, dict[str, str]]:
    try:
        data: dict[str, dict[str, str]] = json.loads(where.passwords.read_text())
    except OSError as exc:
        message = f"no secrets yet ({exc}); run: sigstream infra up --profile secure"
        raise ServiceError(sec.PROFILE, message) from exc
    return data


# Kafka ---------------------------------------------------------------------------------


def admin_config(spec: sec.SecureSpec, where: SecureLayout, password: str) -> dict[str, Any]:
    """librdkafka config of the profile's ``admin`` super user."""
    return {
        "bootstrap.servers": spec.kafka_bootstrap,
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": sec.SCRAM,
        "sasl.username": sec.KAFKA_ADMIN,
        "sasl.password": password,
        "ssl.ca.location": str(where.ca_crt),
    }


def _start_kafka(
    java: Path, settings: Settings, spec: sec.SecureSpec, where: SecureLayout, pw: dict[str, str]
) -> int:
    if port_open(spec.host, spec.kafka_controller_port):
        raise ServiceError(KAFKA, f"controller port {spec.kafka_controller_port} is in use")
    where.kafka_run.mkdir(parents=True, exist_ok=True)
    props = sec.kafka_secure_properties(
        spec,
        log_dir=where.kafka_data,
        keystore=where.kafka_keystore,
        truststore=where.ca_crt,
        passwords=pw,
        partitions=settings.topic_partitions,
    )
    server = where.kafka_run / "server.properties"
    sec.write_secret(server, config.render_properties(props))  # holds passwords: 0600
    log4j = where.kafka_run / "log4j2.properties"
    log4j.write_text(config.kafka_log4j2_properties())
    rotate(where.kafka_log)
    jars = single.layout(settings).kafka_jars
    if not (where.kafka_data / "meta.properties").exists():
        progress("formatting the secure Kafka storage (SCRAM users admin, gateway, job)…")
        cmd = config.kafka_java_command(
            java, jars, "256m", log4j, kafka.STORAGE_TOOL, "format", "--ignore-formatted"
        )
        cmd += ["-t", config.new_cluster_id(), "-c", str(server), *sec.scram_format_args(pw)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        with where.kafka_log.open("a") as log:
            log.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise fail(
                KAFKA, f"storage format failed (exit {result.returncode})", [where.kafka_log]
            )
    cmd = config.kafka_java_command(
        java, jars, spec.kafka_heap, log4j, kafka.MAIN_CLASS, str(server)
    )
    child = spawn(cmd, log_file=where.kafka_log, cwd=where.kafka_run)
    where.kafka_pid.write_text(f"{child.pid}\n")
    progress(f"started secure Kafka (pid {child.pid}) on {spec.kafka_bootstrap} (SASL_SSL)")
    return child.pid


def _kafka_answers(conf: dict[str, Any]) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({**conf, "log_level": 0}).list_topics(timeout=3)
        return True
    except Exception:
        return False


def setup_kafka(spec: sec.SecureSpec, where: SecureLayout, settings: Settings) -> None:
    """Topics and ACLs (idempotent: existing ones are kept)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        NewTopic,
        ResourcePatternType,
        ResourceType,
    )

    pw = load_passwords(where)["kafka"]
    admin = AdminClient(admin_config(spec, where, pw[sec.KAFKA_ADMIN]))
    topics = [
        settings.events_topic,
        settings.dlq_topic,
        settings.summaries_topic,
        settings.matches_topic,
    ]
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [t for t in topics if t not in existing]
    if missing:
        new = [NewTopic(t, num_partitions=settings.topic_partitions) for t in missing]
        for future in admin.create_topics(new).values():
            with contextlib.suppress(KafkaException):
                future.result(30)
        progress(f"created topics {', '.join(missing)}")
    bindings = [
        AclBinding(
            ResourceType.BROKER if a.resource == "cluster" else ResourceType[a.resource.upper()],
            a.name,
            ResourcePatternType[a.pattern.upper()],
            a.principal,
            "*",
            AclOperation[a.operation.upper()],
            AclPermissionType.ALLOW,
        )
        for a in sec.kafka_acls(
            settings.events_topic,
            settings.dlq_topic,
            settings.summaries_topic,
            settings.matches_topic,
        )
    ]
    for future in admin.create_acls(bindings).values():
        future.result(30)
    progress(f"Kafka ACLs in place ({len(bindings)} bindings for gateway and job)")


# Elasticsearch -------------------------------------------------------------------------


def _prepare_es(
    java_home: Path, settings: Settings, spec: sec.SecureSpec, where: SecureLayout
) -> Path:
    """ES_PATH_CONF of the profile: the distribution's config, our yml, certs and keystore."""
    home = single.layout(settings).es_home(settings.es_version)
    ids = es.ensure_user(settings.es_user)
    if ids is not None and home.stat().st_uid != ids[0]:
        es._chown_tree(home, *ids)
    es.make_reachable_dirs(where.es_root, where.es_conf, where.es_data, where.es_logs, where.es_tmp)
    for item in (home / "config").iterdir():
        if item.name in {"elasticsearch.yml", "elasticsearch.keystore"}:
            continue
        target = where.es_conf / item.name
        if target.exists():
            continue
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copy2(item, target)
    values = sec.es_secure_settings(
        spec, data_dir=where.es_data, logs_dir=where.es_logs, cluster_name=ES_CLUSTER
    )
    (where.es_conf / "elasticsearch.yml").write_text(config.render_es_yml(values))
    certs = where.es_conf / sec.CERTS_DIR
    certs.mkdir(exist_ok=True)
    for source, name in (
        (where.node_key, "node.key"),
        (where.node_crt, "node.crt"),
        (where.ca_crt, "ca.crt"),
    ):
        sec.write_secret(certs / name, source.read_bytes())
    write_es_realm(where, settings)
    keystore = where.es_conf / "elasticsearch.keystore"
    if not keystore.exists():
        progress("setting the elastic password in the Elasticsearch keystore…")
        env = config.es_env(os.environ, java_home, "64m", where.es_tmp)
        env["ES_PATH_CONF"] = str(where.es_conf)
        password = load_passwords(where)["elasticsearch"][sec.ES_SUPERUSER]
        tool = [
            str(home / "bin" / "elasticsearch-keystore"),
            "add",
            "-x",
            "-f",
            "bootstrap.password",
        ]
        result = subprocess.run(
            tool, input=password, capture_output=True, text=True, env=env, timeout=120, check=False
        )
        if result.returncode != 0:
            raise ServiceError(
                ELASTICSEARCH, f"elasticsearch-keystore failed: {result.stderr[-500:]}"
            )
    if ids is not None:
        es._chown_tree(where.es_root, *ids)
        if not config.can_traverse(where.es_root, ids[0], [ids[1]]):
            raise ServiceError(
                ELASTICSEARCH, f"user {settings.es_user!r} cannot reach {where.es_root}"
            )
    return home


def _start_es(
    java_home: Path, settings: Settings, spec: sec.SecureSpec, where: SecureLayout
) -> None:
    home = _prepare_es(java_home, settings, spec, where)
    with contextlib.suppress(OSError):
        where.es_pid.unlink()
    rotate(where.es_launcher_log)
    cmd = [str(home / "bin" / "elasticsearch"), "-d", "-p", str(where.es_pid)]
    if es.runs_as_other_user():
        cmd = ["runuser", "-u", settings.es_user, "--", *cmd]
    env = config.es_env(os.environ, java_home, spec.es_heap, where.es_tmp)
    env["ES_PATH_CONF"] = str(where.es_conf)
    _launchers[where.es_pid] = spawn(
        cmd, log_file=where.es_launcher_log, env=env, cwd=where.es_logs
    )
    progress(f"started secure Elasticsearch on {spec.es_url} (TLS, security on)")


def ssl_context(where: SecureLayout) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(where.ca_crt))


def es_request(
    spec: sec.SecureSpec,
    where: SecureLayout,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    user: str = sec.ES_SUPERUSER,
    password: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, Any]]:
    """One HTTPS request to the profile's Elasticsearch as ``user`` (default: elastic)."""
    if password is None:
        password = load_passwords(where)["elasticsearch"][user]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        spec.es_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ssl_context(where)) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def _es_health(spec: sec.SecureSpec, where: SecureLayout) -> str | None:
    try:
        code, body = es_request(
            spec, where, "GET", "/_cluster/health?wait_for_status=yellow&timeout=2s", timeout=5
        )
    except (OSError, ValueError):
        return None
    return str(body.get("status")) if code == 200 else None


def write_es_realm(where: SecureLayout, settings: Settings) -> None:
    """Users, their roles and the role definitions, as file-realm files (0600, ES user)."""
    pw = load_passwords(where)["elasticsearch"]
    roles = sec.es_roles(
        settings.findings_index,
        settings.events_index,
        settings.shadow_findings_index,
        settings.sensors_index,
    )
    files = {
        "users": sec.render_users_file(pw),
        "users_roles": sec.render_users_roles(),
        "roles.yml": sec.render_roles_yml(roles),
    }
    ids = es.ensure_user(settings.es_user)
    for name, text in files.items():
        sec.write_secret(where.es_conf / name, text)
        if ids is not None:
            os.chown(where.es_conf / name, *ids)


def setup_es(spec: sec.SecureSpec, where: SecureLayout, settings: Settings) -> None:
    """Check every user logs in (file realm), then set up the findings/events store as
    elastic (index templates, rollover aliases), as ``infra up`` does for the default.
    The realm files are rewritten first: index names may differ from the last start."""
    write_es_realm(where, settings)
    pw = load_passwords(where)["elasticsearch"]
    deadline = time.monotonic() + 30
    for name in sec.ES_USERS:
        while True:
            code, answer = es_request(spec, where, "GET", "/_security/_authenticate", user=name)
            if code == 200:
                break
            if time.monotonic() > deadline:
                raise ServiceError(ELASTICSEARCH, f"user {name} cannot log in: {code} {answer}")
            time.sleep(1.0)
    # The file realm reloads within seconds: wait until the roles name today's indices.
    asked = {"index": [{"names": [settings.findings_index], "privileges": ["create_doc"]}]}
    path = "/_security/user/_has_privileges"
    while not es_request(spec, where, "POST", path, asked, user=sec.ES_JOB)[1].get(
        "has_all_requested"
    ):
        if time.monotonic() > deadline:
            raise ServiceError(ELASTICSEARCH, "the roles file was not picked up in time")
        time.sleep(1.0)
    progress(f"Elasticsearch roles and users in place: {', '.join(sec.ES_USERS)}")
    from detections.sinks.elasticsearch import connect
    from triage.lifecycle import setup_store

    client = connect(
        [spec.es_url],
        basic_auth=(sec.ES_SUPERUSER, pw[sec.ES_SUPERUSER]),
        ca_certs=str(where.ca_crt),
    )
    try:
        for line in setup_store(client, settings.findings_index, settings.events_index):
            progress(line)
    finally:
        client.close()


# Lifecycle -----------------------------------------------------------------------------


def status(
    settings: Settings | None = None, spec: sec.SecureSpec | None = None
) -> dict[str, ServiceStatus]:
    _, where = _ctx(settings)
    spec = spec or sec.SecureSpec()
    out: dict[str, ServiceStatus] = {}
    for name, pid_file, marker, port, log in (
        (KAFKA, where.kafka_pid, kafka.MAIN_CLASS, spec.kafka_port, where.kafka_log),
        (ELASTICSEARCH, where.es_pid, es.SERVER_MARKER, spec.es_http_port, where.es_log),
    ):
        pid = running_pid(pid_file, marker)
        state = "running" if pid else ("external" if port_open(spec.host, port) else "stopped")
        out[name] = ServiceStatus(f"secure-{name}", state, pid, f"{spec.host}:{port}", log)
    return out


def up(
    settings: Settings | None = None, spec: sec.SecureSpec | None = None, timeout: float = 240.0
) -> dict[str, ServiceStatus]:
    """Secrets, then both services (in parallel), then ACLs, roles, users. Idempotent."""
    cfg, where = _ctx(settings)
    spec = spec or sec.SecureSpec()
    single.fetch([KAFKA, ELASTICSEARCH], spark=False, settings=cfg)
    pw = ensure_secrets(where, spec)
    before = status(cfg, spec)
    for name, st in before.items():
        if st.state == "external":
            raise ServiceError(
                name, f"{st.address} is taken by a process this profile did not start"
            )
    java_home = single.find_java_home(cfg)
    # Elasticsearch first: its boot is the long pole, Kafka's storage format overlaps it.
    if before[ELASTICSEARCH].state != "running":
        _start_es(java_home, cfg, spec, where)
    kafka_pid = before[KAFKA].pid
    if before[KAFKA].state != "running":
        kafka_pid = _start_kafka(java_home / "bin" / "java", cfg, spec, where, pw["kafka"])
    deadline = time.monotonic() + timeout
    progress("waiting for the secure Kafka and Elasticsearch…")
    conf = admin_config(spec, where, pw["kafka"][sec.KAFKA_ADMIN])
    kafka_ok = es_ok = False
    while not (kafka_ok and es_ok):
        kafka_ok = kafka_ok or (port_open(spec.host, spec.kafka_port) and _kafka_answers(conf))
        es_ok = es_ok or (
            port_open(spec.host, spec.es_http_port)
            and _es_health(spec, where) in {"yellow", "green"}
        )
        if not kafka_ok and running_pid(where.kafka_pid, kafka.MAIN_CLASS) is None:
            reason = exited_during_startup("the broker", kafka_pid, where.kafka_pid)
            raise fail(KAFKA, reason, [where.kafka_log])
        launcher = _launchers.get(where.es_pid)
        if not es_ok and launcher is not None and launcher.poll() not in (None, 0):
            raise fail(
                ELASTICSEARCH, "bin/elasticsearch failed", [where.es_launcher_log, where.es_log]
            )
        if not es_ok and launcher is not None and launcher.poll() == 0:
            pid = running_pid(where.es_pid, es.SERVER_MARKER)
            if pid is None or not pid_alive(pid):
                raise fail(
                    ELASTICSEARCH,
                    "the node exited during startup",
                    [where.es_log, where.es_launcher_log],
                )
        if time.monotonic() > deadline:
            logs = [where.kafka_log] if not kafka_ok else [where.es_log, where.es_launcher_log]
            raise fail(
                KAFKA if not kafka_ok else ELASTICSEARCH, "not ready before the timeout", logs
            )
        if not (kafka_ok and es_ok):
            time.sleep(1.0)
    _launchers.pop(where.es_pid, None)
    setup_kafka(spec, where, cfg)
    setup_es(spec, where, cfg)
    return status(cfg, spec)


def down(
    settings: Settings | None = None,
    spec: sec.SecureSpec | None = None,
    *,
    wipe: bool = False,
    timeout: float = 30.0,
) -> list[str]:
    """Stop what the profile started; ``wipe`` also deletes its data and secrets."""
    _, where = _ctx(settings)
    stopped: list[str] = []
    for name, pid_file, marker in (
        (ELASTICSEARCH, where.es_pid, es.SERVER_MARKER),
        (KAFKA, where.kafka_pid, kafka.MAIN_CLASS),
    ):
        pid = running_pid(pid_file, marker)
        if pid is None:
            continue
        progress(f"stopping secure {name} (pid {pid})…")
        terminate(pid, timeout)
        with contextlib.suppress(OSError):
            pid_file.unlink()
        stopped.append(f"secure-{name}")
    _launchers.pop(where.es_pid, None)
    if wipe:
        shutil.rmtree(where.root, ignore_errors=True)
        shutil.rmtree(where.es_root, ignore_errors=True)
        progress(f"deleted the secure profile's data and secrets in {where.root}")
    return stopped


# Rotation ------------------------------------------------------------------------------

ROTATABLE = (sec.KAFKA_GATEWAY, sec.KAFKA_JOB, *sec.ES_USERS)


def rotate_passwords(
    settings: Settings | None = None,
    spec: sec.SecureSpec | None = None,
    users: list[str] | None = None,
) -> list[str]:
    """New passwords for the gateway and job Kafka users (SCRAM credentials replaced over
    the Admin API) and the ``sigstream_*`` ES users (file realm, reloaded within seconds),
    while both services run. Connections already open stay up; new logins need the new
    password. ``admin``, the controller link and ``elastic`` are in the services' own
    config and change only with ``down --wipe`` + ``up`` (see infra/README.md)."""
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    cfg, where = _ctx(settings)
    spec = spec or sec.SecureSpec()
    chosen = list(users or ROTATABLE)
    unknown = [u for u in chosen if u not in ROTATABLE]
    if unknown:
        raise ValueError(f"cannot rotate {unknown} live; choose from {list(ROTATABLE)}")
    pw = load_passwords(where)
    new = {user: sec.new_password() for user in chosen}
    kafka_users = [u for u in chosen if u in (sec.KAFKA_GATEWAY, sec.KAFKA_JOB)]
    if kafka_users:
        admin = AdminClient(admin_config(spec, where, pw["kafka"][sec.KAFKA_ADMIN]))
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        changes: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(u, info, new[u].encode()) for u in kafka_users
        ]
        for future in admin.alter_user_scram_credentials(changes).values():
            future.result(30)
        pw["kafka"].update({u: new[u] for u in kafka_users})
        sec.write_secret(where.passwords, sec.render_passwords(pw))
    es_users = [u for u in chosen if u in sec.ES_USERS]
    if es_users:
        pw["elasticsearch"].update({u: new[u] for u in es_users})
        sec.write_secret(where.passwords, sec.render_passwords(pw))
        write_es_realm(where, cfg)
        deadline = time.monotonic() + 30
        for user in es_users:
            while es_request(spec, where, "GET", "/_security/_authenticate", user=user)[0] != 200:
                if time.monotonic() > deadline:
                    raise ServiceError(ELASTICSEARCH, f"the new password of {user} is not live")
                time.sleep(1.0)
    progress(f"rotated the passwords of {', '.join(chosen)} (in {where.passwords})")
    return chosen


def rotate_certs(settings: Settings | None = None, spec: sec.SecureSpec | None = None) -> None:
    """New server certificates from the same CA (clients keep trusting it), then a restart
    of both services so they load them."""
    cfg, where = _ctx(settings)
    spec = spec or sec.SecureSpec()
    renew_server_certs(where, spec)
    down(cfg, spec)
    up(cfg, spec)


def client_settings(
    settings: Settings | None = None,
    spec: sec.SecureSpec | None = None,
    *,
    kafka_user: str | None = None,
    es_user: str | None = None,
) -> Settings:
    """``settings`` pointed at the profile as ``kafka_user`` and ``es_user`` (with passwords)."""
    cfg, where = _ctx(settings)
    spec = spec or sec.SecureSpec()
    pw = load_passwords(where)
    env = sec.client_env(spec, where.secrets, kafka_user=kafka_user, es_user=es_user, passwords=pw)
    updates: dict[str, Any] = {
        "kafka_bootstrap": env["SIGSTREAM_KAFKA_BOOTSTRAP"],
        "kafka_security_protocol": env["SIGSTREAM_KAFKA_SECURITY_PROTOCOL"],
        "kafka_sasl_mechanism": env["SIGSTREAM_KAFKA_SASL_MECHANISM"],
        "kafka_ssl_ca": Path(env["SIGSTREAM_KAFKA_SSL_CA"]),
        "es_hosts": [spec.es_url],
        "es_ca": Path(env["SIGSTREAM_ES_CA"]),
        "kafka_sasl_username": env.get("SIGSTREAM_KAFKA_SASL_USERNAME"),
        "kafka_sasl_password": env.get("SIGSTREAM_KAFKA_SASL_PASSWORD"),
        "es_username": env.get("SIGSTREAM_ES_USERNAME"),
        "es_password": env.get("SIGSTREAM_ES_PASSWORD"),
    }
    return as_user(cfg, **updates)
