#!/usr/bin/env bash
# Build the minimal OpenTelemetry Collector (filelog receiver -> otlphttp exporter) that
# test_opentelemetry_collector runs when SIGSTREAM_OTELCOL points at it. Needs Go and the
# Go module proxy; from an empty module cache it took 341 s here (62 s for the builder,
# 279 s to compile, 2 busy cores), so CI runs the SDK exporter test instead.
#   OUT=.run/otelcol tests/integration/shippers/build_otelcol.sh
#   SIGSTREAM_OTELCOL=.run/otelcol/otelcol-sigstream pytest -m integration -k collector
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${OUT:-.run/otelcol}")"
mkdir -p "$out"
export PATH="/usr/local/go/bin:$PATH" GOFLAGS=-modcacherw
export GOPATH="${GOPATH:-$out/gopath}"
go install go.opentelemetry.io/collector/cmd/builder@v0.165.0
sed "s#\${OTELCOL_OUT}#$out#" "$here/otelcol-builder.yaml" > "$out/builder.yaml"
"$GOPATH/bin/builder" --config "$out/builder.yaml"
echo "built $out/otelcol-sigstream"
