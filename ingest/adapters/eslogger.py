"""macOS Endpoint Security events as ``eslogger`` prints them -> macOS schema events.

``eslogger`` (macOS 13+, ``sudo eslogger exec create write rename``) writes one JSON
object per line: an ``es_message_t`` with the integer ``event_type`` (``es_event_type_t``),
``event`` holding one member named after the event (``{"exec": {...}}``), the instigating
``process`` (``es_process_t``: ``executable.path``, ``audit_token.{pid,pidversion,euid,
ruid,...}``, ``ppid``, ``signing_id``, ``team_id``, ``cdhash``, ``is_platform_binary``,
``session_id``, ``start_time``, ``tty``), ``time``, ``mach_time``, ``seq_num``,
``global_seq_num``, ``action_type``, ``version`` and ``schema_version``. Pure: no I/O.

Mapping (``logsource.product: macos``, Sigma's macOS taxonomy):

* ``exec`` (ES_EVENT_TYPE_NOTIFY_EXEC = 9) -> ``process_creation``: ``Image`` =
  ``target.executable.path`` (the new image), ``CommandLine`` = ``args`` joined by spaces,
  ``CurrentDirectory`` = ``cwd.path``, ``ProcessId`` = target pid, ``ParentProcessId`` =
  target ``ppid``. ``ParentImage`` = the instigating ``process``'s image: in ES the exec's
  ``process`` is the same pid before the exec (``target`` after it). After fork+exec (and
  posix_spawn) that image is the parent's image, which is what ``ParentImage`` means to the
  rules; ES carries no path for the ``ppid`` itself, so this is the best the event gives.
  ``User``: ``root`` for euid 0, else the exec's ``USER``/``LOGNAME`` when its euid is the
  ruid (the environment names the real user), else the uid as text; ids stay in ``extra``.
* ``create`` (13) / ``write`` (33) / ``rename`` (25) -> ``file_event``: ``TargetFilename``
  = the created/written file or the rename's destination, ``Image``/``ProcessId``/``User``
  of the instigating process. ``destination`` is ``existing_file`` (a file) or ``new_path``
  (``dir.path`` + ``filename``), chosen by ``destination_type`` (0/1).
* anything else (fork, exit, open, unlink, setmode, ...) -> ``EsloggerUnsupported``
  (reason ``unsupported_event``), never silently dropped.

``ProcessGuid`` is a UUID of host, pid, pidversion and start time: ES gives each image of
a process a new pidversion, so a process's file events correlate to the exec that started
its image. Signing facts (signing id, team id, cdhash, platform binary) go to ``extra``.

The host: eslogger prints none. The shipper adds it (``host.name``, a ``host`` string as
Vector's sources do, ``hostname``); else the credential's sensor id names it; else the
record is refused. Event id: host + ``global_seq_num`` + ``mach_time`` + ``time`` (mach
time restarts at boot, the sequence when eslogger restarts), else the SHA-256 of the line.

Sources the layout and fixtures follow: Apple's Endpoint Security reference
(developer.apple.com/documentation/endpointsecurity: es_message_t, es_process_t,
es_event_exec_t, es_event_create_t.destination / es_destination_type_t, es_event_rename_t,
es_event_write_t, es_event_type_t), the numbering of es_event_type_t as in the Rust
bindings (docs.rs endpointsecurity-rs ``EsEventType``: NotifyExec = 9, NotifyFork = 11,
NotifyCreate = 13, NotifyExit = 15, NotifyRename = 25, NotifyWrite = 33), and a real
``eslogger exec`` line published in github.com/tstromberg/esl
(pkg/eslogger/testdata/exec.json: ``args`` a string array, ``cwd.path``, ``target``,
``audit_token``, ``global_seq_num``). Some tools read ``args`` as ``{"items":
[{"value": ...}]}`` and ``destination_type`` as a string; both spellings are accepted.
Not verified on a Mac.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ingest.adapters.windows import AdapterError, parse_time, stable_event_id
from schemas.events import Envelope, parse_event

LAYOUT = "eslogger"
#: es_event_type_t values of the NOTIFY events eslogger prints -> the ``event`` member name.
EVENT_NAMES: Mapping[int, str] = {
    9: "exec",
    10: "open",
    11: "fork",
    12: "close",
    13: "create",
    14: "exchangedata",
    15: "exit",
    16: "get_task",
    19: "link",
    22: "mount",
    23: "unmount",
    25: "rename",
    26: "setattrlist",
    27: "setextattr",
    28: "setflags",
    29: "setmode",
    30: "setowner",
    31: "signal",
    32: "unlink",
    33: "write",
    41: "truncate",
    43: "lookup",
}
FILE_EVENTS = frozenset({"create", "write", "rename"})
SUPPORTED = FILE_EVENTS | {"exec"}
#: Limits on what one record may contribute (a shell's argv can be huge).
MAX_ARGS = 4096
MAX_COMMAND_LINE = 32_768
_GUID_NAMESPACE = uuid.UUID("5b0d4f3e-6c1a-4a55-9a53-6d61636f7365")
_HOST_KEYS = ("host.name", "host.hostname", "hostname")
_EXISTING_FILE = 0
_NEW_PATH = 1


class EsloggerUnsupported(AdapterError):
    """An ES event this adapter does not map (fork, exit, open ...): refused, with why."""

    reason = "unsupported_event"


def is_eslogger(obj: Any) -> bool:
    """An ``es_message_t`` as eslogger prints it: an integer ``event_type`` (a schema event's
    is a string), an ``event`` object, a ``process`` with an ``audit_token``, ``mach_time``."""
    if not isinstance(obj, Mapping):
        return False
    event_type = obj.get("event_type")
    process = obj.get("process")
    return (
        isinstance(event_type, int)
        and not isinstance(event_type, bool)
        and isinstance(obj.get("event"), Mapping)
        and isinstance(process, Mapping)
        and isinstance(process.get("audit_token"), Mapping)
        and "mach_time" in obj
    )


# -- small readers ---------------------------------------------------------------------------


def _obj(node: Any, key: str) -> Mapping[str, Any]:
    value = node.get(key) if isinstance(node, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping | list | bool):
        return None
    text = str(value).strip()
    return text or None


def _path(node: Any, key: str) -> str | None:
    """``node[key].path`` (an ``es_file_t``)."""
    return _text(_obj(node, key).get("path"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def event_name(obj: Mapping[str, Any]) -> str:
    """The event's name: the one member of ``event``; checked against ``event_type``."""
    event = obj["event"]
    names = [k for k, v in event.items() if isinstance(v, Mapping)]
    expected = EVENT_NAMES.get(obj["event_type"])
    if expected is not None and expected in event:
        return expected
    if len(names) == 1:
        return names[0]
    raise AdapterError(
        f"eslogger event_type {obj['event_type']} with event members {sorted(names)[:5]}"
    )


def _args(value: Any) -> list[str]:
    """``args``: a string array (eslogger), or ``{"items": [{"value": ...}]}``."""
    if isinstance(value, Mapping):
        value = [i.get("value") if isinstance(i, Mapping) else i for i in value.get("items", [])]
    if not isinstance(value, list):
        return []
    return [str(a) for a in value[:MAX_ARGS] if a is not None]


def _environment(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        value = [i.get("value") if isinstance(i, Mapping) else i for i in value.get("items", [])]
    out: dict[str, str] = {}
    for item in value if isinstance(value, list) else []:
        if isinstance(item, str) and "=" in item:
            key, _, val = item.partition("=")
            if key in ("USER", "LOGNAME"):
                out.setdefault(key, val)
    return out


def _destination(event: Mapping[str, Any]) -> str | None:
    """The path of a create/rename ``destination`` union (existing file or new path)."""
    kind = event.get("destination_type")
    dest = _obj(event, "destination")
    existing = _path(dest, "existing_file")
    new = _obj(dest, "new_path") or (dest if "filename" in dest else {})
    if kind in (_NEW_PATH, "new_path") or (existing is None and new):
        directory = _path(new, "dir") or _path(new, "existing_file")
        name = _text(new.get("filename"))
        if directory is None or name is None:
            return None
        return f"{directory.rstrip('/')}/{name}"
    return existing


def host_of(obj: Mapping[str, Any], sensor_id: str | None) -> str:
    """The host the shipper named (``host.name``, ``host`` text, ``hostname``), else the
    credential's sensor id; raises AdapterError when neither is known."""
    host_field = obj.get("host")
    if isinstance(host_field, str) and host_field.strip():
        return host_field.strip()
    for key in _HOST_KEYS:
        first, _, rest = key.partition(".")
        value = _obj(obj, first).get(rest) if rest else obj.get(first)
        if rest and value is None:
            value = obj.get(key)  # a dotted key
        if _text(value):
            return str(value).strip()
    if sensor_id:
        return sensor_id
    raise AdapterError(
        "eslogger record without a host: have the shipper add host.name (or host), "
        "or send it with a sensor's credential"
    )


def process_guid(host: str, process: Mapping[str, Any]) -> str | None:
    token = _obj(process, "audit_token")
    pid = _int(token.get("pid"))
    if pid is None:
        return None
    seed = f"{host.lower()}:{pid}:{token.get('pidversion')}:{process.get('start_time')}"
    return str(uuid.uuid5(_GUID_NAMESPACE, seed))


def _user(
    process: Mapping[str, Any], environment: Mapping[str, str]
) -> tuple[str | None, int | None]:
    token = _obj(process, "audit_token")
    euid = _int(token.get("euid"))
    if euid == 0:
        return "root", euid
    if euid is not None and euid == _int(token.get("ruid")):
        name = environment.get("USER") or environment.get("LOGNAME")
        if name:
            return name, euid
    return (str(euid) if euid is not None else None), euid


def _process_extra(process: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    token = _obj(process, "audit_token")
    out: dict[str, Any] = {
        "euid": token.get("euid"),
        "ruid": token.get("ruid"),
        "auid": token.get("auid"),
        "pidversion": token.get("pidversion"),
        "signing_id": process.get("signing_id"),
        "team_id": process.get("team_id"),
        "cdhash": process.get("cdhash"),
        "is_platform_binary": process.get("is_platform_binary"),
        "session_id": process.get("session_id"),
        "group_id": process.get("group_id"),
        "original_ppid": process.get("original_ppid"),
        "responsible_pid": _obj(process, "responsible_audit_token").get("pid"),
        "tty": _path(process, "tty"),
    }
    return {
        f"{prefix}{k}": str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in out.items()
        if v is not None and not isinstance(v, Mapping | list)
    }


# -- one mapper per supported event ------------------------------------------------------------


def _exec_fields(obj: Mapping[str, Any], event: Mapping[str, Any], host: str) -> dict[str, Any]:
    target = _obj(event, "target")
    if not target:
        raise AdapterError("eslogger exec without a target process")
    image = _path(target, "executable")
    if image is None:
        raise AdapterError("eslogger exec without target.executable.path")
    process = obj["process"]
    environment = _environment(event.get("env"))
    user, _ = _user(target, environment)
    command_line = " ".join(_args(event.get("args")))[:MAX_COMMAND_LINE]
    extra = _process_extra(target)
    extra.update(_process_extra(process, "parent_"))
    script = _path(event, "script")
    if script:
        extra["script"] = script
    return {
        "event_type": "process_creation",
        "Image": image,
        "CommandLine": command_line or image,
        "CurrentDirectory": _path(event, "cwd"),
        "ProcessId": _int(_obj(target, "audit_token").get("pid")),
        "ProcessGuid": process_guid(host, target),
        "ParentProcessId": _int(target.get("ppid")),
        "ParentImage": _path(process, "executable"),
        "User": user,
        "extra": extra,
    }


def _file_fields(
    obj: Mapping[str, Any], name: str, event: Mapping[str, Any], host: str
) -> dict[str, Any]:
    target = _path(event, "target") if name == "write" else _destination(event)
    if target is None:
        raise AdapterError(f"eslogger {name} without a destination path")
    process = obj["process"]
    user, _ = _user(process, {})
    extra = _process_extra(process)
    source = _path(event, "source")
    if source:
        extra["SourceFilename"] = source
    return {
        "event_type": "file_event",
        "TargetFilename": target,
        "Image": _path(process, "executable"),
        "ProcessId": _int(_obj(process, "audit_token").get("pid")),
        "ProcessGuid": process_guid(host, process),
        "User": user,
        "extra": extra,
    }


def record_origin(obj: Mapping[str, Any], raw: bytes, host: str) -> str:
    """Stable across re-reads: host + global sequence + mach time + time, else the bytes."""
    seq = _int(obj.get("global_seq_num"))
    mach = _int(obj.get("mach_time"))
    if seq is not None and mach is not None:
        return f"{LAYOUT}:{host.lower()}:{seq}:{mach}:{obj.get('time')}"
    return f"{LAYOUT}:sha256:{hashlib.sha256(raw).hexdigest()}"


def to_event(
    obj: Mapping[str, Any],
    raw: bytes,
    *,
    tenant_id: str,
    sensor_id: str | None,
    received_time: datetime | None = None,
    sent_time: datetime | None = None,
) -> Envelope:
    """One eslogger line -> a validated macOS schema event; raises AdapterError
    (EsloggerUnsupported for events this adapter does not map), never anything else."""
    if not is_eslogger(obj):
        raise AdapterError(
            "not an eslogger record (event_type, event, process.audit_token, mach_time)"
        )
    try:
        return _to_event(obj, raw, tenant_id, sensor_id, received_time, sent_time)
    except AdapterError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise AdapterError(f"eslogger record unreadable: {type(exc).__name__}: {exc}") from exc


def _to_event(
    obj: Mapping[str, Any],
    raw: bytes,
    tenant_id: str,
    sensor_id: str | None,
    received_time: datetime | None,
    sent_time: datetime | None,
) -> Envelope:
    name = event_name(obj)
    if name not in SUPPORTED:
        raise EsloggerUnsupported(
            f"eslogger event {name!r} (event_type {obj['event_type']}) is not mapped: "
            f"only {', '.join(sorted(SUPPORTED))} become macOS events"
        )
    host = host_of(obj, sensor_id)
    event = obj["event"][name]
    if name == "exec":
        fields = _exec_fields(obj, event, host)
    else:
        fields = _file_fields(obj, name, event, host)
    fields["extra"] = {"es_event": name, **fields["extra"]}
    payload: dict[str, Any] = {
        **{
            k: v if k in ("event_type", "extra") else str(v)
            for k, v in fields.items()
            if v is not None
        },
        "tenant_id": tenant_id,
        "sensor_id": sensor_id or host.lower(),
        "host": host,
        "event_id": stable_event_id(record_origin(obj, raw, host)),
        "event_time": parse_time(obj.get("time")),
        "received_time": received_time,
        "sent_time": sent_time,
        "logsource": {"product": "macos", "category": fields["event_type"]},
    }
    try:
        return parse_event(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise AdapterError(f"schema validation failed at {where}: {first['msg']}") from exc


__all__ = [
    "EVENT_NAMES",
    "LAYOUT",
    "SUPPORTED",
    "EsloggerUnsupported",
    "event_name",
    "host_of",
    "is_eslogger",
    "process_guid",
    "record_origin",
    "to_event",
]
