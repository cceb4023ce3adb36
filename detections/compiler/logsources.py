"""Which events a Sigma rule applies to: the one place that maps logsources to the schema.

A rule's ``logsource`` (category / product / service) becomes a ``Route``: the event types
it can match plus the product and service the event must carry. Rules never see events
of other routes, which is both correct (Sigma's semantics) and most of the engine's speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

from schemas.events import EVENT_TYPES, MODEL_BY_TYPE, Envelope
from schemas.generate import event_columns

#: Sigma categories that span several of the schema's event types.
_UMBRELLA_CATEGORIES: dict[str, tuple[str, ...]] = {
    "registry_event": ("registry_add", "registry_delete", "registry_set", "registry_rename"),
}

#: Event types of service logs (Sigma logsources without a category): rules reach them
#: by product and service, never by category.
SERVICE_EVENT_TYPES: frozenset[str] = frozenset({"windows_event", "auditd", "linux_log"})

#: Sigma category -> event types carrying it. Categories absent here are not covered yet.
CATEGORY_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    **{t: (t,) for t in EVENT_TYPES if t not in SERVICE_EVENT_TYPES},
    **_UMBRELLA_CATEGORIES,
}

#: The Windows event header: a typed column on every event, whatever its type.
HEADER_FIELDS: tuple[str, ...] = ("EventID", "Channel", "Provider_Name")

#: Products the schema carries events for -> the Sigma categories their sensors send
#: (``None``: every category). Service logs of these products are covered whatever the
#: service: the event names it in ``logsource.service``.
PRODUCT_CATEGORIES: dict[str, frozenset[str] | None] = {
    "windows": None,
    "linux": frozenset({"process_creation", "file_event", "network_connection"}),
    "macos": frozenset({"process_creation", "file_event"}),
}

#: Products the schema carries events for.
PRODUCTS: frozenset[str] = frozenset(PRODUCT_CATEGORIES)


@dataclass(frozen=True, order=True)
class Route:
    """The slice of the event stream a rule applies to. ``None`` means "any"."""

    product: str | None
    event_types: tuple[str, ...] | None
    service: str | None

    def describe(self) -> str:
        types = ",".join(self.event_types) if self.event_types else "*"
        return f"{self.product or '*'}/{types}/{self.service or '*'}"


class UncoveredLogsource(ValueError):
    """The schema carries no events of this logsource, so the rule could never match."""


def route_for(category: str | None, product: str | None, service: str | None) -> Route:
    """The route of a rule logsource; raises UncoveredLogsource if no event can match."""
    if product is not None and product.lower() not in PRODUCTS:
        raise UncoveredLogsource(f"product {product!r} is not collected")
    event_types: tuple[str, ...] | None = None
    if category is not None:
        try:
            event_types = CATEGORY_EVENT_TYPES[category.lower()]
        except KeyError:
            raise UncoveredLogsource(
                f"category {category!r} has no event type in the schema"
            ) from None
        collected = PRODUCT_CATEGORIES.get(product.lower()) if product else None
        if collected is not None and category.lower() not in collected:
            raise UncoveredLogsource(
                f"category {category!r} is not collected for product {product!r} "
                f"(only {', '.join(sorted(collected))})"
            )
    if category is None and product is None and service is None:
        raise UncoveredLogsource("logsource names no category, product or service")
    return Route(
        product=product.lower() if product else None,
        event_types=event_types,
        service=service.lower() if service else None,
    )


@cache
def declared_fields(route: Route) -> frozenset[str]:
    """Typed columns the route's event types declare (the Windows header included)."""
    declared = set(HEADER_FIELDS)
    for event_type in route.event_types or ():
        declared |= set(MODEL_BY_TYPE[event_type].model_fields)
    return frozenset(declared & typed_fields())


@lru_cache(maxsize=1)
def typed_fields() -> frozenset[str]:
    """Sigma fields that are typed columns of some event model."""
    return frozenset((set(event_columns()) - set(Envelope.model_fields)) | set(HEADER_FIELDS))


def field_source(route: Route, name: str) -> str:
    """Where a Sigma field lives for events of ``route``: ``col``, ``extra`` or ``either``.

    Fields the route's event types declare are typed columns; anything else is looked up
    in ``extra``. Routes that span typed and generic events (a service-only rule such as
    ``service: sysmon``) may find a declared field in either place, so both are tried.
    """
    if route.event_types:
        return "col" if name in declared_fields(route) else "extra"
    if name in HEADER_FIELDS:
        return "col"
    return "either" if name in typed_fields() else "extra"
