"""Read and triage findings in Elasticsearch, always scoped to the caller's tenant.

Request bodies are built by pure functions (``list_query`` ...) and executed by thin
functions taking an Elasticsearch client. The findings analysts see are the group
documents (``<index>-groups``); their matches are in ``<index>``; raw events for context
in the events index. Another tenant's finding is simply "not found".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import ConflictError, Elasticsearch, NotFoundError

from common.settings import RESERVED_TENANT_PREFIX
from detections.sinks.indices import groups_index, suppressions_index
from detections.sinks.suppression import Suppression
from triage import workflow
from triage.auth import Caller
from triage.queries import TextLimits, check_text

SORTS = {
    "last_seen": "sigstream.group.last_seen",
    "first_seen": "sigstream.group.first_seen",
    "count": "sigstream.group.count",
    "severity": "event.severity",
    "rule": "rule.name",
    "host": "host.name",
    "status": "sigstream.finding.status",
}
MAX_PAGE_SIZE = 200
#: Elasticsearch's default max_result_window: from + size beyond it is refused.
MAX_WINDOW = 10_000
#: Heavy fields a list page does not need.
LIST_EXCLUDES = ["sigstream.event", "sigstream.finding.history", "sigstream.finding.notes"]


class NotFound(LookupError):
    """No such finding for this caller (other tenants' findings are not found either)."""


class Forbidden(PermissionError):
    """The caller's role does not allow this."""


@dataclass
class ListFilters:
    start: datetime | None = None
    end: datetime | None = None
    levels: list[str] = field(default_factory=list)
    rule: str | None = None
    host: str | None = None
    status: list[str] = field(default_factory=list)
    assignee: str | None = None
    text: str | None = None
    sort: str = "last_seen"
    order: str = "desc"
    page: int = 1
    size: int = 25


def tenant_filter(caller: Caller) -> list[dict[str, Any]]:
    """The clause every query carries: only the caller's tenant; for an all-tenants
    caller every tenant but the reserved ones (canary findings are never a customer's)."""
    return _tenant_clause(caller, "sigstream.tenant_id")


def _tenant_clause(caller: Caller, fld: str) -> list[dict[str, Any]]:
    if caller.tenant is not None:
        return [{"term": {fld: caller.tenant}}]
    if caller.include_reserved:
        return []
    return [{"bool": {"must_not": [{"prefix": {fld: RESERVED_TENANT_PREFIX}}]}}]


def _ci_term(fld: str, value: str) -> dict[str, Any]:
    return {"term": {fld: {"value": value, "case_insensitive": True}}}


def list_query(
    f: ListFilters,
    caller: Caller,
    limits: TextLimits | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """The search body for one page of findings. A free text over ``limits`` raises
    QueryRejected; ``timeout_s`` bounds the search inside Elasticsearch (partial results
    then, with ``timed_out``)."""
    limits = limits or TextLimits()
    if f.sort not in SORTS:
        raise ValueError(f"unknown sort {f.sort!r}; one of {', '.join(SORTS)}")
    filters = tenant_filter(caller)
    if f.start:
        filters.append({"range": {"sigstream.group.last_seen": {"gte": f.start.isoformat()}}})
    if f.end:
        filters.append({"range": {"sigstream.group.first_seen": {"lte": f.end.isoformat()}}})
    if f.levels:
        filters.append({"terms": {"rule.level": [lv.lower() for lv in f.levels]}})
    if f.rule:
        filters.append(
            {
                "bool": {
                    "should": [_ci_term("rule.id", f.rule), _ci_term("rule.name", f.rule)],
                    "minimum_should_match": 1,
                }
            }
        )
    if f.host:
        filters.append(_ci_term("host.name", f.host))
    if f.status:
        filters.append({"terms": {"sigstream.finding.status": f.status}})
    if f.assignee:
        filters.append({"term": {"sigstream.finding.assignee": f.assignee}})
    must: list[dict[str, Any]] = []
    if f.text and f.text.strip():
        check_text(f.text, limits)
        must.append(
            {
                "simple_query_string": {
                    "query": f.text,
                    "fields": ["message", "message.words"],
                    "default_operator": "and",
                    "fuzzy_max_expansions": limits.fuzzy_max_expansions,
                }
            }
        )
    size = max(1, min(f.size, MAX_PAGE_SIZE))
    page = max(1, f.page)
    if page * size > MAX_WINDOW:
        raise ValueError(f"paging stops at {MAX_WINDOW:,} findings: narrow the filters")
    order = "asc" if f.order == "asc" else "desc"
    extra = {"timeout": f"{int(timeout_s * 1000)}ms"} if timeout_s else {}
    return {
        **extra,
        "query": {"bool": {"filter": filters, "must": must}},
        "sort": [{SORTS[f.sort]: {"order": order}}, {"sigstream.finding.id": "asc"}],
        "from": (page - 1) * size,
        "size": size,
        "track_total_hits": True,
        "_source": {"excludes": LIST_EXCLUDES},
    }


def list_findings(
    es: Elasticsearch,
    index: str,
    caller: Caller,
    f: ListFilters,
    limits: TextLimits | None = None,
    timeout_s: float | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page of finding documents)."""
    total, rows, _ = find_page(es, index, caller, f, limits, timeout_s)
    return total, rows


def find_page(
    es: Elasticsearch,
    index: str,
    caller: Caller,
    f: ListFilters,
    limits: TextLimits | None = None,
    timeout_s: float | None = None,
) -> tuple[int, list[dict[str, Any]], bool]:
    """(total matching, one page of finding documents, whether the search hit
    ``timeout_s`` and so returned partial results)."""
    body = list_query(f, caller, limits, timeout_s)
    try:
        resp = es.search(index=groups_index(index), **body)
    except NotFoundError:
        return 0, [], False
    rows = [h["_source"] for h in resp["hits"]["hits"]]
    return int(resp["hits"]["total"]["value"]), rows, bool(resp.get("timed_out"))


def _hit(es: Elasticsearch, index: str, caller: Caller, finding_id: str) -> dict[str, Any]:
    """The finding's search hit (with _index, _seq_no) if the caller may see it."""
    query = {"bool": {"filter": [{"ids": {"values": [finding_id]}}, *tenant_filter(caller)]}}
    try:
        resp = es.search(index=groups_index(index), query=query, size=1, seq_no_primary_term=True)
    except NotFoundError as exc:
        raise NotFound(finding_id) from exc
    hits = resp["hits"]["hits"]
    if not hits:
        raise NotFound(finding_id)
    return hits[0]


def get_finding(es: Elasticsearch, index: str, caller: Caller, finding_id: str) -> dict[str, Any]:
    return _hit(es, index, caller, finding_id)["_source"]


def finding_matches(
    es: Elasticsearch, index: str, caller: Caller, finding: dict[str, Any], size: int = 50
) -> tuple[int, list[dict[str, Any]]]:
    """The finding's matching events (per-match documents), oldest first."""
    gid = finding["sigstream"]["group"]["id"]
    query = {
        "bool": {
            "filter": [{"term": {"sigstream.group.id": gid}}, *tenant_filter(caller)],
            "must_not": [{"exists": {"field": "sigstream.suppressed_by"}}],
        }
    }
    resp = es.search(
        index=index, query=query, size=size, sort=[{"@timestamp": "asc"}], track_total_hits=True
    )
    return int(resp["hits"]["total"]["value"]), [h["_source"] for h in resp["hits"]["hits"]]


#: Base findings a correlation finding's detail resolves (a count correlation may hold
#: thousands; the rest are counted, not fetched).
MAX_BASE_FINDINGS = 100


def base_findings(
    es: Elasticsearch,
    index: str,
    caller: Caller,
    finding: dict[str, Any],
    size: int = MAX_BASE_FINDINGS,
) -> list[dict[str, Any]]:
    """The base findings of a correlation finding (``sigstream.correlation.base_findings``),
    in its order, each with its rule, host, time, process, why it matched and the finding
    (group) to open. One that is not stored (a base rule with ``generate: false`` writes no
    finding, or retention removed it) or that the caller may not see is listed with
    ``found: false``. Empty for any other finding. One search, by id."""
    correlation = (finding.get("sigstream") or {}).get("correlation") or {}
    ids = list(dict.fromkeys(correlation.get("base_findings") or []))[:size]
    if not ids:
        return []
    resp = es.search(
        index=index,
        query={"bool": {"filter": [{"ids": {"values": ids}}, *tenant_filter(caller)]}},
        size=len(ids),
        source_includes=[
            "@timestamp",
            "rule.id",
            "rule.name",
            "rule.level",
            "host.name",
            "event.id",
            "event.category",
            "process.command_line",
            "process.executable",
            "sigstream.group.id",
            "sigstream.match",
            "sigstream.correlation.type",
        ],
    )
    found = {h["_id"]: h["_source"] for h in resp["hits"]["hits"]}
    out: list[dict[str, Any]] = []
    for fid in ids:
        src = found.get(fid)
        if src is None:
            out.append({"id": fid, "found": False})
            continue
        rule, sig = src.get("rule") or {}, src.get("sigstream") or {}
        out.append(
            {
                "id": fid,
                "found": True,
                "finding_id": (sig.get("group") or {}).get("id") or fid,
                "rule_id": rule.get("id"),
                "rule": rule.get("name"),
                "level": rule.get("level"),
                "host": (src.get("host") or {}).get("name"),
                "time": src.get("@timestamp"),
                "event_id": (src.get("event") or {}).get("id"),
                "category": (src.get("event") or {}).get("category"),
                "process": src.get("process") or {},
                "match": sig.get("match"),
                "correlation": bool(sig.get("correlation")),  # a chained correlation's
            }
        )
    return out


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def related_events_query(
    finding: dict[str, Any], caller: Caller, window: timedelta, size: int = 100
) -> dict[str, Any]:
    """Events from the finding's host within ``window`` of its first and last match."""
    g = finding["sigstream"]["group"]
    first = _parse(g.get("first_seen") or finding["@timestamp"])
    last = _parse(g.get("last_seen") or finding["@timestamp"])
    return {
        "query": {
            "bool": {
                "filter": [
                    {"term": {"host": finding["host"]["name"]}},
                    {"term": {"tenant_id": finding["sigstream"]["tenant_id"]}},
                    *([] if caller.tenant is None else [{"term": {"tenant_id": caller.tenant}}]),
                    {
                        "range": {
                            "event_time": {
                                "gte": (first - window).isoformat(),
                                "lte": (last + window).isoformat(),
                            }
                        }
                    },
                ]
            }
        },
        "sort": [{"event_time": "asc"}],
        "size": size,
    }


def related_events(
    es: Elasticsearch,
    events_index: str,
    caller: Caller,
    finding: dict[str, Any],
    window: timedelta,
) -> list[dict[str, Any]]:
    try:
        resp = es.search(index=events_index, **related_events_query(finding, caller, window))
    except NotFoundError:
        return []
    return [h["_source"] for h in resp["hits"]["hits"]]


def _process_start(
    es: Elasticsearch, events_index: str, tenant: str, guid: str
) -> dict[str, Any] | None:
    resp = es.search(
        index=events_index,
        size=1,
        query={
            "bool": {
                "filter": [
                    {"term": {"tenant_id": tenant}},
                    {"term": {"ProcessGuid": guid}},
                    {"term": {"event_type": "process_creation"}},
                ]
            }
        },
    )
    hits = resp["hits"]["hits"]
    return hits[0]["_source"] if hits else None


def process_ancestry(
    es: Elasticsearch, events_index: str, finding: dict[str, Any], max_depth: int = 10
) -> list[dict[str, Any]]:
    """The acting process and its ancestors (process-creation events, child first),
    followed through ``ParentProcessGuid`` as far as the events index knows them."""
    event = finding["sigstream"].get("event") or {}
    tenant = finding["sigstream"]["tenant_id"]
    guid = event.get("ProcessGuid") or event.get("SourceProcessGuid")
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        while guid and guid not in seen and len(chain) < max_depth:
            seen.add(guid)
            start = _process_start(es, events_index, tenant, guid)
            if start is None:
                if not chain and event.get("ParentProcessGuid"):
                    guid = event["ParentProcessGuid"]  # the match itself is the creation
                    continue
                break
            chain.append(start)
            guid = start.get("ParentProcessGuid")
    except NotFoundError:
        return []
    return chain


def update_finding(
    es: Elasticsearch,
    index: str,
    caller: Caller,
    finding_id: str,
    action: str,
    attempts: int = 8,
    **kwargs: Any,
) -> dict[str, Any]:
    """Apply a triage action with optimistic concurrency; returns the new state.

    The update names only ``sigstream.finding``, so it can race the job's count updates
    safely: whichever loses re-reads and retries."""
    if not caller.can_write:
        raise Forbidden(f"{caller.user} ({caller.role}) may not change findings")
    for _ in range(attempts):
        hit = _hit(es, index, caller, finding_id)
        state = hit["_source"]["sigstream"]["finding"]
        new = workflow.apply(state, action, caller.user, datetime.now(UTC), **kwargs)
        try:
            es.update(
                index=hit["_index"],
                id=finding_id,
                doc={"sigstream": {"finding": new}},
                if_seq_no=hit["_seq_no"],
                if_primary_term=hit["_primary_term"],
                refresh="wait_for",
            )
            return new
        except ConflictError:
            continue
    raise ConflictError("too many concurrent updates", None, None)  # type: ignore[arg-type]


# --- suppressions --------------------------------------------------------------------


def add_suppression(es: Elasticsearch, index: str, caller: Caller, sup: Suppression) -> Suppression:
    """Store a suppression for the caller's tenant (its id is derived from what it matches)."""
    if not caller.can_write:
        raise Forbidden(f"{caller.user} ({caller.role}) may not add suppressions")
    tenant = caller.tenant or sup.tenant_id
    sup = sup.model_copy(
        update={"tenant_id": tenant, "author": caller.user, "created": datetime.now(UTC)}
    ).with_id()
    es.index(
        index=suppressions_index(index),
        id=sup.id,
        document=sup.model_dump(mode="json"),
        refresh="wait_for",
    )
    return sup


def list_suppressions(es: Elasticsearch, index: str, caller: Caller) -> list[dict[str, Any]]:
    """The caller's suppressions, each with how many matches it has silenced so far."""
    try:
        resp = es.search(
            index=suppressions_index(index),
            size=1000,
            query={"bool": {"filter": tenant_filter_plain(caller)}},
        )
    except NotFoundError:
        return []
    rows = [h["_source"] for h in resp["hits"]["hits"]]
    if not rows:
        return rows
    counts = es.search(
        index=index,
        size=0,
        query={"bool": {"filter": tenant_filter(caller)}},
        aggs={"s": {"terms": {"field": "sigstream.suppressed_by", "size": len(rows)}}},
    )
    by_id = {b["key"]: b["doc_count"] for b in counts["aggregations"]["s"]["buckets"]}
    for row in rows:
        row["suppressed"] = by_id.get(row["id"], 0)
    return rows


def tenant_filter_plain(caller: Caller) -> list[dict[str, Any]]:
    """Tenant clause for indices whose tenant field is top level (suppressions)."""
    return _tenant_clause(caller, "tenant_id")


# --- verdicts: false-positive rates and the events analysts judged (issue 22) -----------

#: Rules and hosts an fp-rate answer lists at most.
MAX_FP_RATE_ROWS = 500
#: Matches read back per tuning request at most (the proposal is greedy over them).
MAX_VERDICT_EVENTS = 20_000
_VERDICT_GROUPS = 2_000


def closed_filter(caller: Caller, since: datetime | None, rule: str | None) -> list[dict[str, Any]]:
    """Closed findings of the caller's tenant, last seen since ``since``, of ``rule``
    (id or exact title, case-insensitive)."""
    filters = [*tenant_filter(caller), {"term": {"sigstream.finding.status": "closed"}}]
    if since is not None:
        filters.append({"range": {"sigstream.group.last_seen": {"gte": since.isoformat()}}})
    if rule:
        filters.append(
            {
                "bool": {
                    "should": [_ci_term("rule.id", rule), _ci_term("rule.name", rule)],
                    "minimum_should_match": 1,
                }
            }
        )
    return filters


def _by_resolution() -> dict[str, Any]:
    return {
        "terms": {"field": "sigstream.finding.resolution", "size": len(workflow.RESOLUTIONS)},
        "aggs": {"matches": {"sum": {"field": "sigstream.group.count"}}},
    }


def fp_rate_query(
    caller: Caller, since: datetime | None = None, rule: str | None = None, top: int = 50
) -> dict[str, Any]:
    """Closed findings per rule and per (rule, host), split by resolution: the body of one
    search over the findings (group) documents."""
    top = max(1, min(top, MAX_FP_RATE_ROWS))
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": closed_filter(caller, since, rule)}},
        "aggs": {
            "rules": {
                "terms": {"field": "rule.id", "size": top},
                "aggs": {
                    "name": {"terms": {"field": "rule.name", "size": 1}},
                    "resolution": _by_resolution(),
                    "hosts": {
                        "terms": {"field": "host.name", "size": top},
                        "aggs": {"resolution": _by_resolution()},
                    },
                },
            }
        },
    }


def _rates(bucket: dict[str, Any]) -> dict[str, Any]:
    """Counts per resolution (findings and their matches) and the rates over closed."""
    counts = dict.fromkeys(workflow.RESOLUTIONS, 0)
    matches = dict.fromkeys(workflow.RESOLUTIONS, 0)
    for b in bucket["resolution"]["buckets"]:
        if b["key"] in counts:
            counts[b["key"]] = int(b["doc_count"])
            matches[b["key"]] = int(b["matches"]["value"] or 0)
    closed = sum(counts.values())
    return {
        "closed": closed,
        **counts,
        "matches": matches,
        "fp_rate": round(counts["false_positive"] / closed, 4) if closed else None,
        "noise_rate": (
            round((counts["false_positive"] + counts["benign"]) / closed, 4) if closed else None
        ),
    }


def fp_rate_rows(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of an fp-rate answer, highest false-positive rate first (then most closed)."""
    rows = []
    for r in resp["aggregations"]["rules"]["buckets"]:
        names = r["name"]["buckets"]
        hosts = [{"host": h["key"], **_rates(h)} for h in r["hosts"]["buckets"]]
        hosts.sort(key=lambda h: (-(h["fp_rate"] or 0), -h["closed"], h["host"]))
        rows.append(
            {
                "rule_id": r["key"],
                "rule": names[0]["key"] if names else r["key"],
                **_rates(r),
                "hosts": hosts,
            }
        )
    rows.sort(key=lambda r: (-(r["fp_rate"] or 0), -r["closed"], r["rule"]))
    return rows


def fp_rates(
    es: Elasticsearch,
    index: str,
    caller: Caller,
    since: datetime | None = None,
    rule: str | None = None,
    top: int = 50,
) -> list[dict[str, Any]]:
    """False-positive rate per rule and per host over the caller's closed findings."""
    try:
        resp = es.search(index=groups_index(index), **fp_rate_query(caller, since, rule, top))
    except NotFoundError:
        return []
    return fp_rate_rows(dict(resp))


@dataclass
class VerdictEvents:
    """The matching events of closed findings with the asked resolutions."""

    events: list[dict[str, Any]]
    findings: int
    truncated: bool


def verdict_events(
    es: Elasticsearch,
    index: str,
    caller: Caller,
    rule_id: str,
    resolutions: list[str],
    since: datetime | None = None,
    limit: int = MAX_VERDICT_EVENTS,
) -> VerdictEvents:
    """The events (``sigstream.event``) of every match of the caller's findings of
    ``rule_id`` closed with one of ``resolutions``, oldest first, at most ``limit``."""
    bad = [r for r in resolutions if r not in workflow.RESOLUTIONS]
    if bad:
        raise ValueError(f"unknown resolution {bad[0]!r}; one of {', '.join(workflow.RESOLUTIONS)}")
    limit = max(1, min(limit, MAX_VERDICT_EVENTS))
    filters = [
        *closed_filter(caller, since, None),
        {"term": {"rule.id": rule_id}},
        {"terms": {"sigstream.finding.resolution": resolutions}},
    ]
    try:
        groups = es.search(
            index=groups_index(index),
            size=_VERDICT_GROUPS,
            source=False,
            query={"bool": {"filter": filters}},
            sort=[{"sigstream.group.last_seen": "desc"}],
            track_total_hits=True,
        )
    except NotFoundError:
        return VerdictEvents([], 0, False)
    ids = [h["_id"] for h in groups["hits"]["hits"]]
    truncated = int(groups["hits"]["total"]["value"]) > len(ids)
    events: list[dict[str, Any]] = []
    after: list[Any] | None = None
    while ids and len(events) < limit:
        size = min(1000, limit - len(events))
        resp = es.search(
            index=index,
            size=size,
            query={
                "bool": {
                    "filter": [
                        {"terms": {"sigstream.group.id": ids}},
                        {"term": {"rule.id": rule_id}},
                        *tenant_filter(caller),
                    ],
                    "must_not": [{"exists": {"field": "sigstream.suppressed_by"}}],
                }
            },
            sort=[{"@timestamp": "asc"}, {"sigstream.finding.id": "asc"}],
            source={"includes": ["sigstream.event"]},
            search_after=after,
        )
        hits = resp["hits"]["hits"]
        events.extend(h["_source"]["sigstream"]["event"] for h in hits)
        if len(hits) < size:
            break
        after = hits[-1]["sort"]
    if len(events) >= limit:
        truncated = True
    return VerdictEvents(events[:limit], len(ids), truncated)
