"""The canaries' Elasticsearch edge: the rule-health index, looking for canary findings,
the 7-day match counts ``rules health`` shows, and writing "rule not firing" findings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from elasticsearch import Elasticsearch, NotFoundError, helpers

from common.settings import RESERVED_TENANT_PREFIX
from detections.content.canary.evaluate import Sighting
from detections.sinks.elasticsearch import put_template, write_documents
from detections.sinks.finding_docs import finding_document
from schemas.findings import Finding
from schemas.generate import es_mappings
from schemas.rule_health import RuleHealth

#: Ids asked for per search (Elasticsearch's terms query takes 65,536).
TERMS_CHUNK = 5_000
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
    docs = (RuleHealth.model_validate(h["_source"]) for h in resp["hits"]["hits"])
    return {d.rule_id: d for d in docs}


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
    event_ids: Sequence[str],
    now: datetime | None = None,
) -> dict[str, Sighting]:
    """Canary findings (of ``tenant``) for ``event_ids`` in the active and shadow indices
    (``{"active": index, "shadow": index}``), by event id."""
    seen = now or datetime.now(UTC)
    out: dict[str, Sighting] = {}
    for kind, index in indices.items():
        for start in range(0, len(event_ids), TERMS_CHUNK):
            ids = list(event_ids[start : start + TERMS_CHUNK])
            try:
                resp = es.search(
                    index=index,
                    size=len(ids) * 4,
                    query={
                        "bool": {
                            "filter": [
                                {"term": {"sigstream.tenant_id": tenant}},
                                {"terms": {"event.id": ids}},
                            ]
                        }
                    },
                    source_includes=["event.id", "event.ingested"],
                )
            except NotFoundError:
                break
            for hit in resp["hits"]["hits"]:
                event = hit["_source"].get("event") or {}
                ingested = event.get("ingested")
                out.setdefault(
                    str(event["id"]),
                    Sighting(
                        str(event["id"]),
                        kind,  # type: ignore[arg-type]
                        seen,
                        datetime.fromisoformat(ingested.replace("Z", "+00:00"))
                        if ingested
                        else None,
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
