# One toolchain everywhere: the README, CI (.ci/run) and developers use these targets.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install demo test test-fast lint bench bench-install bench-engine bench-latency bench-alerts bench-ingest bench-throughput bench-idle bench-normalize bench-quick bench-findings bench-fleet bench-correlation drills clean

install:  ## install Sigstream and its dev tools (fast when already installed)
	$(PIP) install -q -e '.[dev]'

demo: install  ## the main job: services up, replay real telemetry, detect, show findings
	sigstream demo

test: install  ## the whole suite: unit + integration + e2e (starts and stops the services)
	$(PYTHON) -m pytest -v

test-fast: install  ## unit tests only, no services (seconds)
	$(PYTHON) -m pytest -m "not integration and not e2e" -q

fuzz: install  ## long property-based and atheris runs (gateway parser, adapters, rule loader)
	$(PIP) install -q -e '.[dev,fuzz]'
	HYPOTHESIS_PROFILE=fuzz $(PYTHON) -m pytest -m fuzz -q

lint:
	$(PYTHON) -m ruff check .

# Benchmarks (issue 4; bench/README.md). They print numbers and never fail on timings.
# Options pass through, e.g. `make bench-engine BENCH_ENGINE_ARGS="--events 500000"`.
BENCH_ENGINE_ARGS ?=
BENCH_LATENCY_ARGS ?=
BENCH_INGEST_ARGS ?=

bench: bench-engine bench-latency bench-ingest  ## all three benchmarks (~18 min with a warm cache)

bench-install:  ## Sigstream plus the benchmark-only extra (crc32c for the kafka-python comparison)
	$(PIP) install -q -e '.[dev,bench]'

bench-engine: bench-install  ## engine events/s for 100 / 1,000 / all rules, vs rsigma
	$(PYTHON) -m bench.engine $(BENCH_ENGINE_ARGS)

bench-latency: bench-install  ## Kafka send -> finding searchable in ES: p50/p95/p99
	$(PYTHON) -m bench.latency $(BENCH_LATENCY_ARGS)
bench-alerts: bench-install  ## finding written -> webhook delivered: p50/p95/p99
	$(PYTHON) -m bench.alert_delivery

bench-ingest: bench-install  ## ingest client -> Kafka events/s: EventProducer (confluent-kafka) vs kafka-python
	$(PYTHON) -m bench.ingest $(BENCH_INGEST_ARGS)

BENCH_FINDINGS_ARGS ?=
bench-gateway: bench-install  ## sensors -> HTTPS gateway -> Kafka events/s
	$(PYTHON) -m bench.gateway $(BENCH_GATEWAY_ARGS)

bench-findings: bench-install  ## triage list/filter/free-text/show latency over 1M findings
	$(PYTHON) -m bench.findings_query $(BENCH_FINDINGS_ARGS)

BENCH_FLEET_ARGS ?=
bench-fleet: bench-install  ## sensor health: 10,000 simulated sensors -> events/s, state size, findings by kind
	$(PYTHON) -m bench.fleet $(BENCH_FLEET_ARGS)

BENCH_NORMALIZE_ARGS ?=
bench-normalize:  ## raw shipper records -> schema events, records/s per layout in one Python worker
	$(PYTHON) -m bench.normalize $(BENCH_NORMALIZE_ARGS)

BENCH_THROUGHPUT_ARGS ?=
bench-throughput: bench-install  ## `sigstream detect --once` on one OTRF backlog: detection only vs the default job, and vs rsigma's daemon
	$(PYTHON) -m bench.throughput $(BENCH_THROUGHPUT_ARGS)

BENCH_IDLE_ARGS ?=
bench-idle: bench-install  ## what the streaming job costs with no events arriving (correlation clock ticks vs a batch every trigger)
	$(PYTHON) -m bench.idle $(BENCH_IDLE_ARGS)

BENCH_CORRELATION_ARGS ?=
bench-correlation: bench-install  ## correlation query: events/s and state size (OTRF + synthetic load)
	$(PYTHON) -m bench.correlation $(BENCH_CORRELATION_ARGS)

bench-quick: bench-install  ## a smoke run of the three (50k events, short runs)
	$(PYTHON) -m bench.engine --quick
	$(PYTHON) -m bench.latency --duration 20
	$(PYTHON) -m bench.ingest --events 50000 --rounds 1

# Fault drills (issue 8; docs/fault-drills.md) on a private Kafka + ES (ports 29092/29200).
DRILLS_ARGS ?=
drills: install  ## kill -9 the job, restart Kafka, stop ES 60 s mid-replay: lost/duplicated findings, recovery s
	$(PYTHON) -m bench.drills $(DRILLS_ARGS)

clean:
	rm -rf .run build
