"""One frozen settings object per process.

Every knob that changes between the embedded single-machine default and a real cluster
lives here (Spark master URL, Kafka bootstrap servers, Elasticsearch hosts), so scaling out
is configuration, never code. Values come from ``SIGSTREAM_*`` environment variables.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Tenant ids starting with this are reserved for Sigstream itself (the canary tenant): no
#: customer tenant can be enrolled with one (the gateway's name rule wants a letter or digit
#: first), and every all-tenants triage view leaves them out unless an operator asks.
RESERVED_TENANT_PREFIX = "_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGSTREAM_", frozen=True)

    # Where downloads (Maven artifacts, the Elasticsearch distribution) and service data live.
    cache_dir: Path = PROJECT_ROOT / ".cache"
    run_dir: Path = PROJECT_ROOT / ".run"

    kafka_bootstrap: str = "127.0.0.1:9092"
    events_topic: str = "telemetry.events"
    dlq_topic: str = "telemetry.dlq"
    # Derived streams the detection pass publishes for the stateful stages (they never read
    # the events topic): correlation base-rule matches, keyed by correlation group.
    matches_topic: str = "sigstream.correlation-matches"
    # Correlations run on per-key event time (docs/correlations.md): a match this far behind
    # its group's newest match is late; older than the horizon (processing time; 0: none, as
    # replays of recorded telemetry need) is late for any group; a quiet group waits at most
    # the TTL (processing time) for a decision.
    correlation_lateness_s: int = Field(60, ge=0)
    correlation_horizon_s: int = Field(0, ge=0)
    correlation_ttl_s: int = Field(3_600, gt=0)
    # Seconds between the correlation stage's clock ticks: quiet keys are decided at most
    # this late, and the stage runs no Spark job without data (0: a batch every trigger).
    correlation_tick_s: float = Field(5.0, ge=0)
    # Internal: per-sensor summaries the detect job emits for sensor health (issue 18),
    # keyed by tenant and sensor (detections/health/summary.py has the format).
    summaries_topic: str = "sigstream.sensor-summaries"
    topic_partitions: int = 2
    # Raw topics (docs/normalize.md): shippers writing to Kafka directly use
    # ``telemetry.raw.<format>`` (format: auto, ecs, winlogbeat_legacy, nxlog, evtx_json or
    # sigstream); the normalizing stage reads every topic matching this Java regex. A
    # record's tenant is its ``sigstream.tenant`` header, else this default (never a field
    # of the payload). Records over the size bound go to the DLQ with the reason.
    raw_topic_pattern: str = r"telemetry\.raw\..+"
    raw_default_tenant: str = Field("default", min_length=1, max_length=128)
    raw_max_record_bytes: int = Field(1024 * 1024, gt=0)

    es_hosts: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:9200"])
    findings_index: str = "sigstream-findings"
    # How long the detect job's micro-batch waits out an Elasticsearch outage (retrying its
    # replay-safe writes with backoff) before the job fails with the error.
    es_patience_s: float = 300.0
    # Seconds one Sigma rule may spend evaluating its share of a micro-batch in one Spark
    # task before the job quarantines it with its measured cost (0: no budget). Regexes run
    # on RE2 and cannot hang, but a heavy rule can still starve a batch; 30 s is far above
    # any SigmaHQ rule on a full batch (microseconds per event) and far below a stall.
    rule_budget_s: float = 30.0

    # Client security (the `secure` profile, infra/README.md); common/client_options.py turns
    # these into each client's options. Defaults: plaintext without authentication.
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca: Path | None = None  # PEM CA the brokers' certificates are checked with
    es_username: str | None = None
    es_password: SecretStr | None = None
    es_api_key: SecretStr | None = None  # instead of username/password
    es_ca: Path | None = None  # PEM CA of https Elasticsearch hosts

    # Local services run by ``infra`` (``sigstream infra up``). Versions are Maven Central
    # coordinates; see infra/README.md for why these ones.
    kafka_version: str = "4.3.1"
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    es_version: str = "8.19.21"
    es_heap: str = "512m"
    # Elasticsearch refuses to run as root: ``infra`` runs it as this system user.
    es_user: str = "sigstream-es"
    # Where the Elasticsearch home, data and logs live. None: under cache_dir/run_dir when
    # es_user can reach them, else /var/lib/sigstream/<hash of cache_dir>/.
    es_root: Path | None = None
    # Spark's Kafka connector version; None means the installed pyspark's version (they must
    # match, since the connector uses Spark internals).
    spark_kafka_version: str | None = None
    # JDK for Kafka and Elasticsearch (Java 17+). None: $JAVA_HOME, then `java` on PATH.
    java_home: Path | None = None
    # Maven settings for fetching; None: infra/maven/settings.xml (mirror everything to Central).
    maven_settings: Path | None = None
    # Node-to-node port; None: Elasticsearch's default range (9300-9399). A second local
    # stack (the fault drills, tests/drills/) pins its own so it never takes the next one.
    es_transport_port: int | None = None

    spark_master: str = "local[2]"
    spark_driver_memory: str = "2g"
    # Any other Spark configuration, applied after Sigstream's own defaults (so it wins):
    # SIGSTREAM_SPARK_CONF='{"spark.executor.memory": "4g", "spark.executor.cores": "4"}'.
    spark_conf: dict[str, str] = {}
    checkpoint_dir: Path = PROJECT_ROOT / ".run" / "checkpoints"
    # Micro-batch trigger of the streaming queries, seconds. bench/README.md's latency
    # figures (p99 1.9-2.2 s at half load, ~4,300-5,000 events/s here) are measured with 0.5.
    trigger_s: float = 0.5
    # Sensor health's trigger (silence is judged in minutes; each trigger of that query runs
    # a Spark job beside the detection pass), and the state partitions of the stateful
    # stages' fresh checkpoints (correlations, sensor health; raise with a cluster's cores).
    health_trigger_s: float = Field(10.0, gt=0)
    # Split a Kafka partition's share of a micro-batch over several Spark tasks above this
    # many records (0: one task per partition), so a backlog keyed by one busy sensor
    # still uses every core.
    max_records_per_task: int = Field(50_000, ge=0)
    state_partitions: int = Field(2, ge=1, le=10_000)

    # Triage (issue 6): matches of one rule on one host within this many seconds are one
    # finding; per-rule overrides in a YAML file ({default: s, rules: {rule id: s}}; 0 = off).
    events_index: str = "sigstream-events"
    group_window_s: int = 3600
    grouping_file: Path | None = None
    # API keys for the triage HTTP API: YAML {key: {tenant: t, role: analyst|read-only, user: u}}.
    api_keys_file: Path | None = None
    # Limits of the triage API server (docs/triage.md, "Hostile requests"): request body
    # bytes (every route), seconds to send the request line and headers, and the body, open
    # connections, idle keep-alive seconds; and the free-text `q`: characters, terms,
    # fuzzy (~) and wildcard (*) terms, and the Elasticsearch search time budget.
    api_max_body_bytes: int = 256 * 1024
    api_header_timeout_s: float = 10.0
    api_body_timeout_s: float = 15.0
    api_max_connections: int = 128
    api_keep_alive_s: float = 5.0
    api_max_q_chars: int = 512
    api_max_q_terms: int = 32
    api_max_q_fuzzy: int = 4
    api_max_q_wildcards: int = 4
    api_search_timeout_s: float = 10.0

    # Prometheus metrics (docs/metrics.md): each process serves /metrics on a listener of
    # its own (never behind the API key or a sensor credential), on metrics_host. Off by
    # default: a new open port is the operator's choice, several stacks share a host here,
    # and the listener is unauthenticated unless metrics_token is set (then a scrape sends
    # "Authorization: Bearer <token>"). Ports: the gateway (one port for all its worker
    # processes, prometheus_client's multiprocess mode), the triage API, the detect job's
    # driver. 0 takes a free port (logged). Per-rule series: the top N rules by cost and by
    # matches, and every rule with errors (bounded label cardinality).
    metrics_enabled: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_gateway_port: int = Field(9461, ge=0, le=65535)
    metrics_api_port: int = Field(9462, ge=0, le=65535)
    metrics_detect_port: int = Field(9463, ge=0, le=65535)
    metrics_canary_port: int = Field(9464, ge=0, le=65535)  # `sigstream canary run`
    metrics_alerts_port: int = Field(9465, ge=0, le=65535)  # `sigstream alerts run`
    metrics_token: SecretStr | None = None
    metrics_rule_series: int = Field(50, ge=0, le=10_000)

    # Values of Sigma `|expand` placeholders (%domain_controllers% ...): a YAML mapping.
    placeholders_file: Path | None = None

    # Alert routing and delivery (docs/alerts.md): the routes file (hot-reloaded), the
    # delivery log, dead letters and the follower's cursor (one index each), how often
    # `sigstream alerts run` looks for new findings, how far back it re-reads (findings are
    # written a little after their `event.ingested`), tries per delivery before the dead
    # letter, backoff, per-destination queue bound and send timeout, and the triage page's
    # base URL for deep links (`<base>/#/finding/<id>`).
    alert_routes: Path | None = None
    alerts_log_index: str = "sigstream-alerts-log"
    alerts_dead_index: str = "sigstream-alerts-dead"
    alerts_state_index: str = "sigstream-alerts-state"
    alerts_poll_s: float = Field(1.0, gt=0)
    alerts_overlap_s: float = Field(120.0, ge=0)
    alerts_max_attempts: int = Field(5, ge=1, le=100)
    alerts_backoff_s: float = Field(1.0, gt=0)
    alerts_backoff_max_s: float = Field(60.0, gt=0)
    alerts_queue_size: int = Field(1000, ge=1)
    alerts_send_timeout_s: float = Field(10.0, gt=0)
    triage_base_url: str = "http://127.0.0.1:8000"
    # (Findings of the reserved canary tenant, ``canary_tenant`` below, are never routed.)

    shared_data: Path = PROJECT_ROOT.parent / "shared" / "data"

    # Rules workflow (docs/rules-workflow.md): events archive for backtests, deployment store,
    # bundle signing key, public keys the job trusts, shadow findings, automatic demotion.
    archive_dir: Path = PROJECT_ROOT / ".run" / "archive" / "events"
    deploy_dir: Path = PROJECT_ROOT / ".run" / "deploy"
    signing_key: Path = PROJECT_ROOT / ".run" / "keys" / "bundle-signing.key"
    trusted_keys: Path = PROJECT_ROOT / ".run" / "keys" / "trusted"
    shadow_findings_index: str = "sigstream-findings-shadow"
    demote_max_alert_rate: float = 0.05
    demote_max_alerts_per_batch: int = 1000
    demote_max_cost_us: float = 500.0
    demote_min_events: int = 1000

    # Sensor health (docs/sensor-health.md): heartbeat interval assumed for sensors that do
    # not announce one, missed intervals before "silent", clock skew threshold, how long
    # missing sequence numbers may still arrive, and the per-sensor status index.
    health_interval_s: float = 60.0
    health_silence_multiplier: float = 3.0
    health_skew_threshold_s: float = 300.0
    health_gap_grace_s: float = 30.0
    sensors_index: str = "sigstream-sensors"

    # Canaries (docs/canaries.md): events built from each deployed rule's true-positive
    # tests, sent through the gateway under a reserved tenant and sensor, prove the rule
    # still fires end to end. Rounds every ``canary_interval_s``; a rule whose canary made
    # no finding within ``canary_timeout_s`` is "not firing" and raises a finding under
    # ``operator_tenant`` (the tenant of Sigstream's own findings about its deployment,
    # the same the demotion findings use). Gateway URL, token (a credential enrolled with
    # ``sigstream canary enroll``) and CA of the gateway's certificate.
    canary_tenant: str = "_canary"
    canary_sensor: str = "_canary-sensor"
    canary_host: str = "sigstream-canary"
    canary_interval_s: float = Field(300.0, gt=0)
    canary_timeout_s: float = Field(300.0, gt=0)
    canary_gateway_url: str | None = None
    canary_token: SecretStr | None = None
    canary_gateway_ca: Path | None = None
    # Where rules' true-positive tests are looked up by rule id (rule folders with
    # ``*.tests.json`` beside the rules, SigmaHQ regression folders); None: the project's
    # own rules and ``<shared_data>/sigma-regression``.
    canary_tests: list[Path] | None = None
    operator_tenant: str = "sigstream"

    @field_validator("canary_tenant")
    @classmethod
    def _reserved(cls, value: str) -> str:
        if not value.startswith(RESERVED_TENANT_PREFIX) or len(value) < 2:
            raise ValueError(
                f"the canary tenant must start with {RESERVED_TENANT_PREFIX!r} (reserved)"
            )
        return value

    # Field drift (docs/field-drift.md): the detect job's field observations (keyed by
    # tenant and route), the drift stage's state and baselines, and when a field counts as
    # gone: the route had at least ``drift_min_events`` events since it was last seen and
    # the baseline predicts ``drift_expected`` of them carried it. A type new since the
    # baseline changed the field's type when it is ``drift_type_share`` of its values. A
    # tenant without a baseline gets one automatically this many hours after its first
    # observation (0: only ``sigstream rules drift --set-baseline``).
    drift_topic: str = "sigstream.field-observations"
    drift_index: str = "sigstream-field-drift"
    drift_expected: float = Field(20.0, gt=0)
    drift_min_events: int = Field(50, ge=1)
    drift_type_share: float = Field(0.5, gt=0, le=1)
    drift_baseline_after_h: float = Field(24.0, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
