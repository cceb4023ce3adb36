"""Send a canary round to the HTTPS gateway, as any sensor would (``POST /v1/events``).

No spool: a round the gateway does not take is not retried later (the next round is
fresher); it is reported, and its rules are judged "not firing: gateway rejected the
canary" with the gateway's reason.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from detections.content.canary.build import CanaryEvent
from ingest.client import SENT_TIME_HEADER

#: Events per request (the gateway takes 10,000 lines; canary rounds are small).
BATCH = 500


@dataclass(frozen=True)
class GatewayTarget:
    url: str
    token: str
    verify: bool | str = True  # a CA file (PEM) for a private gateway certificate
    timeout_s: float = 30.0


@dataclass
class Injection:
    injected: datetime  # just before the first request: latencies count from here
    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # event id -> reason


def inject(target: GatewayTarget, events: Sequence[CanaryEvent]) -> Injection:
    """POST the round; every event the gateway refused (or that never got an answer)
    is in ``rejected`` with the reason."""
    result = Injection(injected=datetime.now(UTC))
    headers = {
        "Authorization": f"Bearer {target.token}",
        "Content-Type": "application/x-ndjson",
    }
    verify: bool | ssl.SSLContext = (
        target.verify
        if isinstance(target.verify, bool)
        else (ssl.create_default_context(cafile=target.verify))
    )
    with httpx.Client(verify=verify, timeout=target.timeout_s) as http:
        for start in range(0, len(events), BATCH):
            chunk = events[start : start + BATCH]
            body = "\n".join(json.dumps(e.event, separators=(",", ":")) for e in chunk) + "\n"
            try:
                resp = http.post(
                    target.url.rstrip("/") + "/v1/events",
                    content=body.encode(),
                    headers={**headers, SENT_TIME_HEADER: f"{time.time():.6f}"},
                )
            except httpx.HTTPError as exc:
                reason = f"gateway unreachable: {type(exc).__name__}: {exc}"[:300]
                result.rejected.update({e.event_id: reason for e in chunk})
                continue
            if resp.status_code != 200:
                reason = f"HTTP {resp.status_code} {_reason(resp)}"[:300]
                result.rejected.update({e.event_id: reason for e in chunk})
                continue
            answer = resp.json()
            result.accepted += int(answer.get("accepted", 0))
            result.duplicates += int(answer.get("duplicates", 0))
            for reject in answer.get("rejects") or []:
                line = int(reject.get("line", 0))
                if 1 <= line <= len(chunk):
                    why = f"{reject.get('reason')}: {reject.get('message')}"[:300]
                    result.rejected[chunk[line - 1].event_id] = why
    return result


def _reason(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
        return f"{doc.get('reason')}: {doc.get('message')}"
    except ValueError:
        return resp.text[:200]
