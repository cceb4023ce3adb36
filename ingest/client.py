"""The sensor side of the gateway: spool every event to disk, deliver in order, retry.

``GatewayClient.submit`` appends events to the spool (``ingest.spool``) and returns; one
delivery thread sends batches from the committed position to the gateway, one batch at a
time, and commits a batch only when the gateway answered it. So a sensor's events reach
Kafka in the order it produced them, and nothing is lost while the gateway or Kafka is away:

* connection errors, timeouts, 5xx: wait (exponential backoff with jitter, capped), re-send;
* 429 / 503 with Retry-After: wait that long, re-send;
* 413 or 400 for a batch: halve the batch until the gateway takes it; a single event it
  still refuses is written to ``rejected.ndjson`` in the spool folder and skipped;
* 401 / 403: the credential is revoked or wrong - stop (events stay spooled), raise.

Every request carries the sensor's clock at send time (``X-Sigstream-Sent-Time``, epoch
seconds); the gateway copies it into each event's ``sent_time``, so a spool uploaded late
is not mistaken for a wrong clock (docs/sensor-health.md).

Re-sending a batch the gateway had already stored is harmless: the gateway answers the
event ids Kafka already has as ``duplicates`` and does not write them again.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import zstandard

from ingest.spool import FsyncPolicy, Position, Spool

log = logging.getLogger(__name__)

#: The batch header carrying the sensor's clock (epoch seconds) when it sent the batch.
SENT_TIME_HEADER = "X-Sigstream-Sent-Time"

Compression = Literal["zstd", "gzip", "identity"]


class CredentialRejected(RuntimeError):
    """The gateway refused the credential (401/403); retrying cannot help."""


@dataclass
class ClientStats:
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0  # single events the gateway refused as a whole (kept in rejected.ndjson)
    retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def compress(data: bytes, how: Compression) -> bytes:
    if how == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if how == "gzip":
        return gzip.compress(data, compresslevel=5)
    return data


class GatewayClient:
    """One sensor's connection to the gateway, backed by a disk spool."""

    def __init__(
        self,
        url: str,
        token: str,
        spool_dir: Path,
        *,
        verify: bool | str = True,
        batch_events: int = 1000,
        batch_bytes: int = 4 * 1024 * 1024,
        compression: Compression = "zstd",
        fsync: FsyncPolicy = "batch",
        timeout_s: float = 30.0,
        max_backoff_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/v1/events"
        self.spool = Spool(spool_dir, fsync=fsync)
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.compression: Compression = compression
        self.max_backoff_s = max_backoff_s
        self.stats = ClientStats()
        self._http = httpx.Client(
            verify=verify,
            transport=transport,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._limit = batch_events  # shrinks while the gateway refuses big batches

    # -- producing ----------------------------------------------------------------------

    def submit(self, records: Iterable[bytes]) -> int:
        """Spool records (compact JSON, one per event); returns how many."""
        batch = list(records)
        if batch:
            self.spool.append(batch)
            self._wake.set()
        return len(batch)

    # -- delivering ---------------------------------------------------------------------

    def _post(self, records: list[bytes], start: Position) -> httpx.Response:
        body = compress(b"\n".join(records) + b"\n", self.compression)
        headers = {
            "X-Sigstream-Batch": f"{start.segment}-{start.offset}",
            # The sensor's clock now, at every (re)send: the gateway copies it into each
            # event's sent_time, which clock skew is judged on (not the event time).
            SENT_TIME_HEADER: f"{time.time():.6f}",
        }
        if self.compression != "identity":
            headers["Content-Encoding"] = self.compression
        return self._http.post(self.url, content=body, headers=headers)

    def _count(self, answer: dict[str, object]) -> None:
        s = self.stats
        s.batches += 1
        s.accepted += int(answer.get("accepted", 0))  # type: ignore[call-overload]
        s.duplicates += int(answer.get("duplicates", 0))  # type: ignore[call-overload]
        s.rejected += int(answer.get("rejected", 0))  # type: ignore[call-overload]
        for reason, n in dict(answer.get("reasons") or {}).items():  # type: ignore[call-overload]
            s.reasons[reason] = s.reasons.get(reason, 0) + int(n)

    def _drop_one(self, record: bytes, status: int, answer: str) -> None:
        with (self.spool.folder / "rejected.ndjson").open("ab") as handle:
            note = json.dumps({"status": status, "answer": answer[:500]}).encode()
            handle.write(note + b"\n" + record + b"\n")
        self.stats.dropped += 1

    def deliver_once(self) -> float:
        """Send the next batch. Returns 0 when it was handled (or nothing was pending),
        else the seconds to wait before trying again."""
        start = self.spool.committed
        records, end = self.spool.read(start, self._limit, self.batch_bytes)
        if not records:
            return 0.0
        try:
            resp = self._post(records, start)
        except httpx.HTTPError as exc:
            log.info("gateway unreachable (%s); events stay spooled", type(exc).__name__)
            return -1.0
        if resp.status_code == 200:
            self._count(resp.json())
            self.spool.commit(end)
            self._limit = min(self.batch_events, self._limit * 2)
            return 0.0
        if resp.status_code in (401, 403):
            raise CredentialRejected(f"gateway answered {resp.status_code}: {resp.text[:200]}")
        if resp.status_code in (400, 413, 415):
            if len(records) > 1:
                self._limit = max(1, len(records) // 2)
                return 0.0
            self._drop_one(records[0], resp.status_code, resp.text)
            self.spool.commit(end)
            return 0.0
        retry_after = resp.headers.get("retry-after", "")
        return float(retry_after) if retry_after.isdigit() else -1.0

    def drain(self, timeout_s: float | None = None) -> bool:
        """Deliver until the spool is empty (True) or the timeout passes (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        backoff = 0.25
        while self.spool.pending():
            if self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                return False
            wait = self.deliver_once()
            if wait == 0:
                backoff = 0.25
                continue
            self.stats.retries += 1
            if wait < 0:  # no hint from the gateway: exponential backoff with jitter
                wait = backoff * (0.5 + random.random())
                backoff = min(self.max_backoff_s, backoff * 2)
            self._stop.wait(min(wait, self.max_backoff_s))
        return True

    # -- background delivery ------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self.drain()
                self._wake.wait(0.5)
                self._wake.clear()
        except BaseException as exc:  # surfaced by close()/raise_error()
            self._error = exc
            log.error("delivery stopped: %r", exc)

    def start(self) -> GatewayClient:
        self._thread = threading.Thread(target=self._loop, name="sensor-delivery", daemon=True)
        self._thread.start()
        return self

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def flush(self, timeout_s: float = 600.0) -> bool:
        """Wait until everything spooled so far is delivered (True) or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while self.spool.pending():
            self.raise_error()
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._http.close()
        self.spool.close()
        self.raise_error()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
