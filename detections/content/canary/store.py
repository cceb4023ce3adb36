"""The canaries' Elasticsearch edge: the rule-health index, looking for canary findings,
the 7-day match counts ``rules health`` shows, and writing "rule not firing" findings."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from elasticsearch import Elasticsearch, NotFoundError, helpers
from pydantic import ValidationError

from common.settings import RESERVED_TENANT_PREFIX
from detections.content.canary.evaluate import Sighting, SightingKey
from detections.sinks.elasticsearch import put_template, write_documents
from detections.sinks.finding_docs import finding_document
from schemas.findings import Finding, finding_id
from schemas.generate import es_mappings
from schemas.rule_health import RuleHealth

log = logging.getLogger(__name__)

#: Finding ids asked for per search: one page of at most twice as many hits per chunk,
#: within Elasticsearch's default result window (10,000).
IDS_CHUNK = 5_000
#: At most this many rules are read back (a deployment of every SigmaHQ rule is ~4,000).
MAX_RULES = 10_000


def health_index(findings_index: str) -> str:
    """One document per deployed rule: last proven firing, canary latency, state."""
    return f"{findings_index}-rule-health"


def ensure_health_index(es: Elasticsearch, index: str) -> None:
    mappings = es_mappings(RuleHealth)
    put_template(es, f"{index}-template", [index], mappings)
    if es.indices.exists(index=index):
        es.indices.put_mapping(index=index, properties=mappings["properties"])
    else:
        es.options(ignore_status=400).indices.create(index=index)


def read_health(es: Elasticsearch, index: str) -> dict[str, RuleHealth]:
    try:
        resp = es.search(index=index, size=MAX_RULES, query={"match_all": {}})
    except NotFoundError:
        return {}
    out: dict[str, RuleHealth] = {}
    for hit in resp["hits"]["hits"]:
        try:
            doc = RuleHealth.model_validate(hit.get("_source"))
        except ValidationError as exc:  # one bad document must not stop every canary tick
            reason = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}" for e in exc.errors()
            )
            log.warning(
                "rule-health document %s in %s skipped (the rule starts again from pending): %s",
                hit.get("_id"),
                index,
                reason,
            )
            continue
        out[doc.rule_id] = doc
    return out


def write_health(es: Elasticsearch, index: str, docs: Iterable[RuleHealth]) -> int:
    actions = (
        {
            "_op_type": "index",
            "_index": index,
            "_id": d.rule_id,
            "_source": d.model_dump(mode="json"),
        }
        for d in docs
    )
    ok, errors = helpers.bulk(es, actions, raise_on_error=False)
    if isinstance(errors, list) and errors:
        raise RuntimeError(f"{len(errors)} rule-health documents refused; first: {errors[0]}")
    # An explicit refresh of this small index, not ``refresh=wait_for``: that waits for the
    # next scheduled refresh (up to 1 s), which would add itself to every measured latency.
    es.indices.refresh(index=index)
    return int(ok)


def find_sightings(
    es: Elasticsearch,
    indices: Mapping[str, str],
    tenant: str,
    sensor: str,
    pending: Mapping[str, Sequence[str]],
    now: datetime | None = None,
) -> dict[SightingKey, Sighting]:
    """The findings of each pending canary's own rule on that canary, in the active and
    shadow indices (``{"active": index, "shadow": index}``), by (rule id, event id).

    Looked up by their deterministic ids (``finding_id(rule, tenant, sensor, event)``, the
    ``_id`` the job writes), never by event id alone: another rule matching a rule's canary
    proves nothing about that rule. ``pending`` maps a rule id to its canary event ids."""
    seen = now or datetime.now(UTC)
    wanted: dict[str, SightingKey] = {
        finding_id(rule_id, tenant, sensor, event_id): (rule_id, event_id)
        for rule_id, event_ids in pending.items()
        for event_id in event_ids
    }
    doc_ids = sorted(wanted)
    out: dict[SightingKey, Sighting] = {}
    for kind, index in indices.items():
        for start in range(0, len(doc_ids), IDS_CHUNK):
            ids = doc_ids[start : start + IDS_CHUNK]
            try:
                resp = es.search(
                    index=index,
                    # One document per id, per backing index of a rollover alias: twice
                    # covers a retried write that landed on both sides of a rollover.
                    size=2 * len(ids),
                    query={
                        "bool": {
                            "filter": [
                                {"ids": {"values": ids}},
                                {"term": {"sigstream.tenant_id": tenant}},
                            ]
                        }
                    },
                    source_includes=["event.id", "event.ingested", "rule.id"],
                )
            except NotFoundError:
                break
            for hit in resp["hits"]["hits"]:
                key = wanted.get(hit["_id"])
                source = hit.get("_source") or {}
                event = source.get("event") or {}
                rule = source.get("rule") or {}
                if key is None or (str(rule.get("id")), str(event.get("id"))) != key:
                    continue  # not the finding asked for (never expected: ids are derived)
                ingested = event.get("ingested")
                out.setdefault(
                    key,
                    Sighting(
                        key[1],
                        kind,  # type: ignore[arg-type]
                        seen,
                        datetime.fromisoformat(ingested.replace("Z", "+00:00"))
                        if ingested
                        else None,
                        rule_id=key[0],
                    ),
                )
    return out


def match_counts(
    es: Elasticsearch, findings_index: str, since: datetime, rules: int = MAX_RULES
) -> dict[str, int]:
    """Matches per rule id since ``since`` (per-match documents, event time), customers'
    tenants only: canary findings would count every rule as busy."""
    try:
        resp = es.search(
            index=findings_index,
            size=0,
            query={
                "bool": {
                    "filter": [{"range": {"@timestamp": {"gte": since.isoformat()}}}],
                    "must_not": [
                        {"prefix": {"sigstream.tenant_id": RESERVED_TENANT_PREFIX}},
                        {"exists": {"field": "sigstream.suppressed_by"}},
                    ],
                }
            },
            aggs={"r": {"terms": {"field": "rule.id", "size": max(rules, 1)}}},
        )
    except NotFoundError:
        return {}
    return {b["key"]: int(b["doc_count"]) for b in resp["aggregations"]["r"]["buckets"]}


def write_findings(es: Elasticsearch, findings_index: str, findings: Sequence[Finding]) -> int:
    """Write "rule not firing" findings (create-only ids) and their groups."""
    if not findings:
        return 0
    result = write_documents(es, findings_index, [finding_document(f) for f in findings])
    return result.created
