"""A file tailer on the OpenTelemetry Python SDK: each line of FILE becomes one LogRecord
(string body, as the Collector's filelog receiver sends it), exported by the SDK's
OTLP/HTTP protobuf exporter (gzip) through a BatchLogRecordProcessor.

    python otlp_sdk_tail.py FILE https://127.0.0.1:PORT/v1/logs TOKEN CA.pem

Reads the file once from the start (the test's file is complete before it starts), then
flushes and exits; the exporter retries 429/503 by itself.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource


def main(path: str, endpoint: str, token: str, ca: str) -> int:
    resource = Resource.create(
        {"service.name": "sigstream-tail", "host.name": socket.gethostname()}
    )
    provider = LoggerProvider(resource=resource)
    exporter = OTLPLogExporter(
        endpoint=endpoint,
        certificate_file=ca,
        headers={"Authorization": f"Bearer {token}"},
        compression=Compression.Gzip,
        timeout=30,
    )
    provider.add_log_record_processor(
        BatchLogRecordProcessor(
            exporter, max_queue_size=100_000, max_export_batch_size=512, schedule_delay_millis=200
        )
    )
    logger = provider.get_logger("sigstream.tail")
    sent = 0
    with Path(path).open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if not line:
                continue
            logger.emit(LogRecord(body=line, attributes={"log.file.name": Path(path).name}))
            sent += 1
    ok = provider.force_flush(timeout_millis=120_000)
    provider.shutdown()
    print(f"sent {sent} records, flushed={ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
