"""The drift index in Elasticsearch: the drift stage's state and the baselines (the I/O
edge of ``detections.drift``; the documents are ``schemas.drift.DriftDoc``).

One document per (tenant, route, sensor version) (``route``), per tenant (``tenant``:
agent versions, the versions kept apart per route, first seen, the current baseline), and
per (tenant, route, version, baseline) (``baseline-route``, the counters when the baseline
was set), plus one per (tenant, route, baseline) across every version (version ``*``).
Old baselines stay (their ids name them). The ids of version ``unknown`` are those of the
documents written before versions were observed (one per route): that state goes on as
the ``unknown`` bucket, and an old baseline serves as its own and the route's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from detections.drift.state import across_versions, baseline_id_for, baseline_of, version_of
from detections.drift.versions import ACROSS, UNKNOWN
from schemas.drift import DriftDoc
from schemas.generate import es_mappings

#: Bound of what one read returns (routes x tenants; far above any real fleet's routes).
MAX_DOCS = 10_000


def _id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def route_doc_id(tenant: str, route: str, version: str = UNKNOWN) -> str:
    if version == UNKNOWN:
        return _id("route", tenant, route)
    return _id("route", tenant, route, version)


def tenant_doc_id(tenant: str) -> str:
    return _id("tenant", tenant)


def baseline_doc_id(tenant: str, route: str, baseline_id: str, version: str = UNKNOWN) -> str:
    if version == UNKNOWN:
        return _id("baseline", tenant, route, baseline_id)
    return _id("baseline", tenant, route, baseline_id, version)


def ensure_drift_index(es: Any, index: str) -> None:
    mappings = es_mappings(DriftDoc)
    if es.indices.exists(index=index):
        es.indices.put_mapping(index=index, properties=mappings["properties"])
    else:
        es.options(ignore_status=400).indices.create(
            index=index,
            mappings=mappings,
            settings={"number_of_shards": 1, "number_of_replicas": 0},
        )


def get_many(es: Any, index: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Documents by id (missing ones left out)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    resp = es.mget(index=index, ids=wanted)
    return {d["_id"]: d["_source"] for d in resp["docs"] if d.get("found")}


def put_many(
    es: Any,
    index: str,
    docs: Mapping[str, Mapping[str, Any]],
    refresh: bool = False,
    merge: bool = False,
) -> int:
    """Index documents by id (each checked against the schema first). With ``merge``,
    only the given fields are written (an upsert): the tenant document has two writers,
    the stage (versions) and ``--set-baseline`` (the baseline), and neither may undo the
    other's write."""
    from elasticsearch import helpers

    def action(doc_id: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        checked = DriftDoc.model_validate(doc)
        if merge:
            body = checked.model_dump(exclude_unset=True)
            return {
                "_op_type": "update",
                "_index": index,
                "_id": doc_id,
                "doc": body,
                "doc_as_upsert": True,
                "retry_on_conflict": 5,
            }
        return {
            "_op_type": "index",
            "_index": index,
            "_id": doc_id,
            "_source": checked.model_dump(),
        }

    actions = [action(doc_id, doc) for doc_id, doc in docs.items()]
    if not actions:
        return 0
    ok, _ = helpers.bulk(es, actions, chunk_size=500, max_retries=5, refresh=refresh)
    return int(ok)


def search(es: Any, index: str, kind: str, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every document of a kind (one tenant's, or all)."""
    if not es.indices.exists(index=index):
        return []
    filters: list[dict[str, Any]] = [{"term": {"kind": kind}}]
    if tenant is not None:
        filters.append({"term": {"tenant_id": tenant}})
    es.indices.refresh(index=index)
    resp = es.search(index=index, size=MAX_DOCS, query={"bool": {"filter": filters}})
    return [h["_source"] for h in resp["hits"]["hits"]]


def current_baselines(
    es: Any,
    index: str,
    tenants: Mapping[str, Mapping[str, Any]],
    buckets: Iterable[tuple[str, str, str]],
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The current baseline's documents of each (tenant, route, version), where the tenant
    has one, and of each (tenant, route, ``*``) (across versions). A baseline set before
    versions were observed has no ``*`` document: its one document per route (the
    ``unknown`` bucket's) is the route's across versions too."""
    ids: dict[str, tuple[str, str, str]] = {}
    for tenant, route, version in buckets:
        baseline = (tenants.get(tenant) or {}).get("baseline_id")
        if baseline:
            for v in (version, ACROSS, UNKNOWN):
                ids[baseline_doc_id(tenant, route, baseline, v)] = (tenant, route, v)
    found = {ids[i]: doc for i, doc in get_many(es, index, ids).items()}
    for (tenant, route, version), doc in list(found.items()):
        if version == UNKNOWN and (tenant, route, ACROSS) not in found and "version" not in doc:
            found[(tenant, route, ACROSS)] = {**doc, "version": ACROSS}
    return found


def route_buckets(states: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(tenant, route, version) of route documents."""
    return [(str(d["tenant_id"]), str(d["route"]), version_of(d)) for d in states]


def set_baseline(
    es: Any, index: str, now: float, how: str = "manual", tenant: str | None = None
) -> dict[str, str]:
    """Snapshot every route of ``tenant`` (or of every tenant) as the new baseline;
    returns tenant -> baseline id."""
    routes = search(es, index, "route", tenant)
    tenant_docs = {d["tenant_id"]: d for d in search(es, index, "tenant", tenant)}
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for doc in routes:
        by_tenant.setdefault(doc["tenant_id"], []).append(doc)
    out: dict[str, str] = {}
    for name, docs in sorted(by_tenant.items()):
        baseline = baseline_id_for(name, now)
        writes: dict[str, dict[str, Any]] = {}
        by_route: dict[str, list[dict[str, Any]]] = {}
        for d in docs:
            doc = baseline_of(d, baseline, now)
            writes[baseline_doc_id(name, d["route"], baseline, version_of(d))] = doc
            by_route.setdefault(str(d["route"]), []).append(doc)
        for route, versions in by_route.items():
            across = across_versions(versions)
            if across is not None:
                writes[baseline_doc_id(name, route, baseline, ACROSS)] = across
        put_many(es, index, writes)
        first = (tenant_docs.get(name) or {}).get("first_seen") or now
        pointer = baseline_pointer(name, baseline, now, how, first)
        put_many(es, index, {tenant_doc_id(name): pointer}, refresh=True, merge=True)
        out[name] = baseline
    return out


def baseline_pointer(
    tenant: str, baseline: str, now: float, how: str, first_seen: float
) -> dict[str, Any]:
    """The fields of a tenant document that name its current baseline."""
    return {
        "kind": "tenant",
        "tenant_id": tenant,
        "baseline_id": baseline,
        "set_at": now,
        "how": how,
        "first_seen": first_seen,
    }
