"""The routes file: destinations, routes, silences. Pure: text in, validated config out.

Loaded with the project's bounded YAML loader (``common.safe_yaml``); every problem is a
:class:`RoutesError` naming the file, the line and the reason, so ``sigstream alerts
check`` and the running process's log say exactly what to fix (and the process keeps the
routes it had). Secrets (HMAC keys, SMTP passwords) are never in the file: it names an
environment variable or a file holding them.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.safe_yaml import ContentError, YamlLimits, load_yaml, read_content
from triage.alerts.kinds import KNOWN_KINDS

#: A routes file is a few KiB; 256 KiB leaves room for hundreds of routes and silences.
ROUTES_LIMITS = YamlLimits(max_bytes=256 * 1024, max_depth=16, max_aliases=64, max_nodes=50_000)
LEVELS = ("informational", "low", "medium", "high", "critical")
LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class RoutesError(ValueError):
    """A routes file that cannot be used: ``file:line: reason`` (line 0 when unknown)."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file, self.line, self.reason = file, line, reason
        super().__init__(f"{file}:{line}: {reason}")


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"30s"``, ``"15m"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"not a duration: {value!r} (examples: 90, 30s, 15m, 2h, 1d)")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


Duration = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Match(_Strict):
    """What a finding must have (every given criterion; within one, any value). Names and
    hosts are shell-style globs, case-insensitive."""

    tenants: list[str] = Field(default_factory=list)
    min_level: Literal["informational", "low", "medium", "high", "critical"] | None = None
    rules: list[str] = Field(default_factory=list)  # rule ids or titles (globs)
    tags: list[str] = Field(default_factory=list)  # Sigma tags, e.g. attack.t1059*
    hosts: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = sorted(set(kinds) - KNOWN_KINDS)
        if unknown:
            raise ValueError(
                f"unknown kind {unknown[0]!r}; one of {', '.join(sorted(KNOWN_KINDS))}"
            )
        return kinds


class Throttle(_Strict):
    """At most ``max`` messages per key within ``window``; the rest are counted and, with
    ``digest``, summed up in one message when the window ends."""

    window: Duration
    per: list[Literal["rule", "host", "tenant", "kind"]] = Field(
        default_factory=lambda: ["rule", "host"]
    )
    max: int = Field(1, ge=1)
    digest: bool = True

    @field_validator("window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class Route(_Strict):
    name: str = Field(min_length=1, max_length=128)
    match: Match = Field(default_factory=Match)
    destinations: list[str] = Field(min_length=1)
    throttle: Throttle | None = None
    enabled: bool = True


class Silence(_Strict):
    """Matching findings are not sent (recorded as silenced, with this reason) until
    ``until``; ``routes`` narrows it to some routes."""

    id: str = Field(min_length=1, max_length=128)
    match: Match = Field(default_factory=Match)
    routes: list[str] = Field(default_factory=list)
    starts: datetime | None = None
    until: datetime
    reason: str = Field(min_length=1, max_length=1000)
    author: str | None = None

    @field_validator("starts", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2026-12-07T06:00:00Z)")
        return value


class _Destination(_Strict):
    #: The tenants whose findings may go here; ["*"] (explicitly) for a global destination.
    tenants: list[str] = Field(min_length=1)
    #: Seconds one send may take (None: the process setting).
    timeout_s: float | None = Field(None, gt=0)

    @field_validator("tenants")
    @classmethod
    def _no_empty(cls, tenants: list[str]) -> list[str]:
        if any(not t for t in tenants):
            raise ValueError("a tenant name cannot be empty")
        return tenants

    def allows(self, tenant: str) -> bool:
        """Whether a finding of ``tenant`` may be delivered here (never another tenant's)."""
        return "*" in self.tenants or tenant in self.tenants


class _Secret(_Strict):
    secret_env: str | None = None
    secret_file: Path | None = None


class WebhookDest(_Destination, _Secret):
    """JSON body, HMAC-SHA256 over ``<timestamp>.<body>`` in ``X-Sigstream-Signature``."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)


class SlackDest(_Destination):
    type: Literal["slack"]
    url: str = Field(pattern=r"^https?://")


class TeamsDest(_Destination):
    type: Literal["teams"]
    url: str = Field(pattern=r"^https?://")
    format: Literal["adaptive", "messagecard"] = "adaptive"


class EmailDest(_Destination):
    type: Literal["email"]
    host: str
    port: int = Field(587, gt=0, lt=65536)
    starttls: bool = True
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None  # the server's CA (None: the system's)
    sender: str = Field(alias="from", min_length=3)
    to: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _tls_for_auth(self) -> EmailDest:
        if self.username and not self.starttls:
            raise ValueError("username without starttls would send the password in clear")
        return self


class SyslogDest(_Destination):
    type: Literal["syslog"]
    host: str
    port: int = Field(514, gt=0, lt=65536)
    protocol: Literal["tcp", "udp"] = "tcp"
    format: Literal["rfc5424", "cef"] = "rfc5424"
    facility: int = Field(10, ge=0, le=23)  # security/authorization (authpriv)
    app_name: str = Field("sigstream", pattern=r"^[!-~]{1,48}$")


class KafkaDest(_Destination):
    """OCSF Detection Finding (class 2004) records on a topic, keyed by finding id."""

    type: Literal["kafka"]
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    bootstrap: str | None = None  # None: SIGSTREAM_KAFKA_BOOTSTRAP with its security options


Destination = Annotated[
    WebhookDest | SlackDest | TeamsDest | EmailDest | SyslogDest | KafkaDest,
    Field(discriminator="type"),
]


class RoutesFile(_Strict):
    destinations: dict[str, Destination] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    silences: list[Silence] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> RoutesFile:
        names: set[str] = set()
        for i, route in enumerate(self.routes):
            if route.name in names:
                raise _At(("routes", i, "name"), f"route name {route.name!r} is used twice")
            names.add(route.name)
            for j, dest in enumerate(route.destinations):
                if dest not in self.destinations:
                    raise _At(("routes", i, "destinations", j), f"no destination named {dest!r}")
        ids: set[str] = set()
        for i, silence in enumerate(self.silences):
            if silence.id in ids:
                raise _At(("silences", i, "id"), f"silence id {silence.id!r} is used twice")
            ids.add(silence.id)
            for j, route_name in enumerate(silence.routes):
                if route_name not in names:
                    raise _At(("silences", i, "routes", j), f"no route named {route_name!r}")
        return self

    def warnings(self) -> list[str]:
        """Legal but probably unintended: a route restricted to tenants that one of its
        destinations will never receive (those deliveries are skipped, never misrouted)."""
        out = []
        for route in self.routes:
            for name in route.destinations:
                dest = self.destinations[name]
                tenants = route.match.tenants or ["(any tenant)"]
                refused = [t for t in tenants if not dest.allows(t)]
                if refused and "*" not in dest.tenants:
                    out.append(
                        f"route {route.name!r}: destination {name!r} takes only tenants "
                        f"{', '.join(dest.tenants)}; findings of {', '.join(refused)} "
                        "are not sent there"
                    )
        return out


class _At(ValueError):
    """A cross-reference error with the path it is about (for the line number)."""

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        self.loc = loc
        super().__init__(message)


def _line_of(text: str, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest node of ``loc`` found in ``text`` (0: unknown).
    Parts that are not in the document (pydantic's union tags) are skipped."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 0
    if node is None:
        return 0
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child, line = value, key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is not None:
            node = child
    return line


def parse_routes(data: str | bytes, file: str = "<routes>") -> RoutesFile:
    """The validated routes file, or :class:`RoutesError` (file:line: reason)."""
    try:
        raw = load_yaml(data, limits=ROUTES_LIMITS)
    except ContentError as exc:
        marks = re.findall(r"line (\d+)", str(exc))  # the last is where the parser gave up
        raise RoutesError(file, int(marks[-1]) if marks else 0, str(exc)) from None
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RoutesError(
            file, 1, "the routes file must be a mapping (destinations, routes, silences)"
        )
    try:
        return RoutesFile.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        ctx_error = (first.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _At):
            raise RoutesError(file, _line_of(text, ctx_error.loc), str(ctx_error)) from None
        loc = tuple(first["loc"])
        where = ".".join(str(p) for p in loc) or "document"
        msg = " ".join(str(first["msg"]).split())
        msg = msg.removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RoutesError(file, _line_of(text, loc), f"{where}: {msg}{more}") from None


def read_routes(path: str | Path) -> bytes:
    """The routes file's bytes, bounded (a regular file of at most the routes limit; a
    FIFO or a huge file is refused, never waited on or read whole), else RoutesError."""
    try:
        return read_content(path, ROUTES_LIMITS.max_bytes)
    except ContentError as exc:
        raise RoutesError(str(path), 0, str(exc)) from None


def load_routes(path: str | Path) -> RoutesFile:
    return parse_routes(read_routes(path), str(path))
