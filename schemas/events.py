"""The telemetry contract: what a sensor sends, one pydantic model per event type.

This module is the single source of truth for event fields. The Spark schema, the
Elasticsearch mappings and the JSON Schema are all generated from these models
(see ``schemas.generate``); nothing else declares an event field by hand.

Field names follow Sigma's taxonomy (``Image``, ``CommandLine``, ``TargetObject`` ...) so
Sigma rules resolve against events without a field mapping. Every field a model does not
declare is kept in ``extra`` (nothing a sensor sent is dropped), and service logs without a
Sigma category (Security, System, Defender ...) use the generic ``WindowsEvent`` whose fields
all live in ``extra``.

Sigma's categories are shared across products: a Linux or macOS process start is a
``process_creation`` event with ``logsource.product`` ``linux`` or ``macos`` and the same
field names (Sysmon for Linux and Sigma's Linux rules use Windows' names: ``Image``,
``CommandLine``, ``ParentImage`` ...). Linux service logs get two models of their own:
``Auditd`` (one auditd record, auditd's own field names) and ``LinuxLog`` (one line of a
text log such as syslog, auth.log or sshd, its text in ``message``).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

SCHEMA_VERSION = 1

Text = str | None
#: A counter inside a map (Spark/Arrow/Elasticsearch long): bounded here, where the
#: gateway's range check of top-level numbers does not reach.
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]


class Logsource(BaseModel):
    """Sigma's logsource triple, as the sensor (or adapter) saw the event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product: str = "windows"
    category: str | None = None
    service: str | None = None


class Envelope(BaseModel):
    """Fields every event carries, whatever its type.

    ``event_id`` is unique per event of its sensor and stable across replays: an event is
    identified by (tenant, sensor, event id), and finding ids are derived from that, so
    re-sending an event never duplicates a finding and no sensor can squat another's ids.
    ``seq`` increases by one per event per sensor, which lets the backend notice gaps (lost
    or deleted events). ``received_time`` is when the gateway received the event;
    ``sent_time`` is the sensor's own clock when it sent the batch that carried it (the
    gateway copies the client's ``X-Sigstream-Sent-Time`` header into it; a direct
    producer stamps it), which is what clock skew is judged on: a late upload of an old
    spool has an old ``event_time`` but a current ``sent_time``.
    """

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    tenant_id: str = Field(default="default", min_length=1, max_length=128)
    sensor_id: str = Field(min_length=1, max_length=256)
    host: str = Field(min_length=1, max_length=256)
    event_id: str = Field(min_length=1, max_length=128)
    seq: int | None = Field(default=None, ge=0)
    event_time: datetime
    received_time: datetime | None = None
    sent_time: datetime | None = None
    logsource: Logsource = Field(default_factory=Logsource)
    extra: dict[str, str] = Field(default_factory=dict)

    # Windows event header, present on every Windows channel (Sigma field names).
    EventID: int | None = None
    Channel: Text = None
    Provider_Name: Text = None

    @model_validator(mode="before")
    @classmethod
    def _own_product(cls, data: Any) -> Any:
        """A logsource without a product is the event type's own product (an ``auditd``
        record's ``{"service": "auditd"}`` is Linux's), not Logsource's Windows default."""
        logsource = data.get("logsource") if isinstance(data, dict) else None
        if isinstance(logsource, dict) and logsource.get("product") is None:
            product = own_logsource(cls).product
            if product != Logsource().product:
                return {**data, "logsource": {**logsource, "product": product}}
        return data


class _ProcessContext(BaseModel):
    """The acting process, as Sysmon reports it on most event types."""

    ProcessGuid: Text = None
    ProcessId: Text = None
    Image: Text = None
    User: Text = None


class _PeMetadata(BaseModel):
    """Version-resource and hash metadata of a PE file."""

    FileVersion: Text = None
    Description: Text = None
    Product: Text = None
    Company: Text = None
    OriginalFileName: Text = None
    Hashes: Text = None


class _Signature(BaseModel):
    Signed: Text = None
    Signature: Text = None
    SignatureStatus: Text = None


class ProcessCreation(Envelope, _ProcessContext, _PeMetadata):
    event_type: Literal["process_creation"] = "process_creation"
    CommandLine: Text = None
    CurrentDirectory: Text = None
    LogonGuid: Text = None
    LogonId: Text = None
    TerminalSessionId: Text = None
    IntegrityLevel: Text = None
    ParentProcessGuid: Text = None
    ParentProcessId: Text = None
    ParentImage: Text = None
    ParentCommandLine: Text = None
    ParentUser: Text = None


class ProcessTermination(Envelope, _ProcessContext):
    event_type: Literal["process_termination"] = "process_termination"


class NetworkConnection(Envelope, _ProcessContext):
    event_type: Literal["network_connection"] = "network_connection"
    Protocol: Text = None
    Initiated: Text = None
    SourceIsIpv6: Text = None
    SourceIp: Text = None
    SourceHostname: Text = None
    SourcePort: Text = None
    SourcePortName: Text = None
    DestinationIsIpv6: Text = None
    DestinationIp: Text = None
    DestinationHostname: Text = None
    DestinationPort: Text = None
    DestinationPortName: Text = None


class FileEvent(Envelope, _ProcessContext):
    event_type: Literal["file_event"] = "file_event"
    TargetFilename: Text = None
    CreationUtcTime: Text = None


class FileDelete(Envelope, _ProcessContext):
    event_type: Literal["file_delete"] = "file_delete"
    TargetFilename: Text = None
    Hashes: Text = None
    IsExecutable: Text = None
    Archived: Text = None


class FileChange(Envelope, _ProcessContext):
    event_type: Literal["file_change"] = "file_change"
    TargetFilename: Text = None
    CreationUtcTime: Text = None
    PreviousCreationUtcTime: Text = None


class CreateStreamHash(Envelope, _ProcessContext):
    event_type: Literal["create_stream_hash"] = "create_stream_hash"
    TargetFilename: Text = None
    CreationUtcTime: Text = None
    Hash: Text = None
    Contents: Text = None


class _Registry(Envelope, _ProcessContext):
    EventType: Text = None
    TargetObject: Text = None
    Details: Text = None
    NewName: Text = None


class RegistryAdd(_Registry):
    event_type: Literal["registry_add"] = "registry_add"


class RegistryDelete(_Registry):
    event_type: Literal["registry_delete"] = "registry_delete"


class RegistrySet(_Registry):
    event_type: Literal["registry_set"] = "registry_set"


class RegistryRename(_Registry):
    event_type: Literal["registry_rename"] = "registry_rename"


class DnsQuery(Envelope, _ProcessContext):
    event_type: Literal["dns_query"] = "dns_query"
    QueryName: Text = None
    QueryStatus: Text = None
    QueryResults: Text = None


class ImageLoad(Envelope, _ProcessContext, _PeMetadata, _Signature):
    event_type: Literal["image_load"] = "image_load"
    ImageLoaded: Text = None


class DriverLoad(Envelope, _Signature):
    event_type: Literal["driver_load"] = "driver_load"
    ImageLoaded: Text = None
    Hashes: Text = None


class ProcessAccess(Envelope):
    event_type: Literal["process_access"] = "process_access"
    SourceProcessGUID: Text = None
    SourceProcessId: Text = None
    SourceThreadId: Text = None
    SourceImage: Text = None
    TargetProcessGUID: Text = None
    TargetProcessId: Text = None
    TargetImage: Text = None
    GrantedAccess: Text = None
    CallTrace: Text = None
    SourceUser: Text = None
    TargetUser: Text = None


class CreateRemoteThread(Envelope):
    event_type: Literal["create_remote_thread"] = "create_remote_thread"
    SourceProcessGuid: Text = None
    SourceProcessId: Text = None
    SourceImage: Text = None
    TargetProcessGuid: Text = None
    TargetProcessId: Text = None
    TargetImage: Text = None
    NewThreadId: Text = None
    StartAddress: Text = None
    StartModule: Text = None
    StartFunction: Text = None
    SourceUser: Text = None
    TargetUser: Text = None


class RawAccessThread(Envelope, _ProcessContext):
    event_type: Literal["raw_access_thread"] = "raw_access_thread"
    Device: Text = None


class PipeCreated(Envelope, _ProcessContext):
    event_type: Literal["pipe_created"] = "pipe_created"
    EventType: Text = None
    PipeName: Text = None


class WmiEvent(Envelope):
    event_type: Literal["wmi_event"] = "wmi_event"
    EventType: Text = None
    Operation: Text = None
    User: Text = None
    EventNamespace: Text = None
    Name: Text = None
    Query: Text = None
    Type: Text = None
    Destination: Text = None
    Consumer: Text = None
    Filter: Text = None


class PsScript(Envelope):
    event_type: Literal["ps_script"] = "ps_script"
    MessageNumber: Text = None
    MessageTotal: Text = None
    ScriptBlockText: Text = None
    ScriptBlockId: Text = None
    Path: Text = None


class PsModule(Envelope):
    event_type: Literal["ps_module"] = "ps_module"
    ContextInfo: Text = None
    UserData: Text = None
    Payload: Text = None


class WindowsEvent(Envelope):
    """Any other Windows channel (Security, System, Defender ...): all fields in ``extra``."""

    event_type: Literal["windows_event"] = "windows_event"


def _auditd_logsource() -> Logsource:
    return Logsource(product="linux", service="auditd")


class Auditd(Envelope):
    """One record of the Linux audit subsystem (``type=SYSCALL msg=audit(...): ...``).

    Fields keep auditd's own names, which are the names SigmaHQ's ``service: auditd`` rules
    use: ``type`` is the record type (``SYSCALL``, ``EXECVE``, ``PATH``, ``SERVICE_STOP``
    ...), ``syscall`` the raw syscall number and ``SYSCALL`` its name as auditd's enriched
    format prints it, ``a0``..``a9`` the syscall's or the command's arguments. Declared
    here are the fields rules name and the acting process; every other key of the record
    (``a10``, ``inode``, ``AUID`` ...) goes in ``extra`` under its auditd name, where the
    rules find it too (service routes look a field up in both places). The audit rule's
    ``key`` is one of those: the job's rows already have a ``key`` column (Kafka's). Values are as
    auditd means them: unquoted, and hex-encoded arguments (``a1=2F746D70``) decoded.
    """

    event_type: Literal["auditd"] = "auditd"
    logsource: Logsource = Field(default_factory=_auditd_logsource)
    type: Text = None
    SYSCALL: Text = None
    syscall: Text = None
    success: Text = None
    exit: Text = None
    argc: Text = None
    a0: Text = None
    a1: Text = None
    a2: Text = None
    a3: Text = None
    a4: Text = None
    a5: Text = None
    a6: Text = None
    a7: Text = None
    a8: Text = None
    a9: Text = None
    pid: Text = None
    ppid: Text = None
    auid: Text = None
    uid: Text = None
    euid: Text = None
    ses: Text = None
    tty: Text = None
    comm: Text = None
    exe: Text = None
    name: Text = None
    nametype: Text = None
    cwd: Text = None
    proctitle: Text = None
    unit: Text = None


def _linux_logsource() -> Logsource:
    return Logsource(product="linux")


class LinuxLog(Envelope):
    """One entry of a Linux text log: syslog, auth.log, a journald entry, a daemon's own
    log (sshd, sudo, cron, vsftpd, clamav, guacamole ...). ``logsource.service`` names the
    log as Sigma does (``syslog``, ``auth``, ``sshd`` ...). SigmaHQ's rules for these logs
    are mostly keyword searches, which look in ``message`` (the entry's text, without the
    syslog header) and every other string field of the event; fields the entry states as
    ``KEY=value`` (sudo's ``USER``, ``COMMAND`` ...) go in ``extra`` under their names.
    """

    event_type: Literal["linux_log"] = "linux_log"
    logsource: Logsource = Field(default_factory=_linux_logsource)
    message: Text = None
    program: Text = None
    pid: Text = None


def _sensor_logsource() -> Logsource:
    return Logsource(product="sigstream", service="heartbeat")


class Heartbeat(Envelope):
    """The sensor saying "I am alive", every ``expected_interval_s`` seconds.

    The backend's sensor-health job (docs/sensor-health.md) reads it: a sensor that sends
    neither events nor heartbeats for a few intervals is reported silent. It carries its own
    ``seq`` like any event, and the sensor's counters, so a gap the sensor knows about
    (dropped or still spooled events) is visible next to the gap the backend measures. Its
    logsource (product ``sigstream``) keeps it out of every Windows, Linux and macOS rule.
    """

    event_type: Literal["heartbeat"] = "heartbeat"
    logsource: Logsource = Field(default_factory=_sensor_logsource)
    expected_interval_s: int | None = Field(default=None, ge=1)
    agent_version: Text = None
    events_sent: int | None = Field(default=None, ge=0)
    events_dropped: int | None = Field(default=None, ge=0)
    events_spooled: int | None = Field(default=None, ge=0)
    # Tamper evidence (``sigstream sensor``, docs/sensor.md): sha256 of the sensor's own code
    # and of its configuration, each event source's status ("ok", "unavailable: <why>",
    # "degraded: <why>"), what each source could not keep (``events_dropped`` is the sum of
    # these and the client's drops), and on the last heartbeat of a clean stop, why it stopped.
    sensor_sha256: Text = None
    config_sha256: Text = None
    sources: dict[str, str] | None = None
    dropped_by_source: dict[str, Count] | None = None
    stop_reason: Text = None


EVENT_MODELS: tuple[type[Envelope], ...] = (
    ProcessCreation,
    ProcessTermination,
    NetworkConnection,
    FileEvent,
    FileDelete,
    FileChange,
    CreateStreamHash,
    RegistryAdd,
    RegistryDelete,
    RegistrySet,
    RegistryRename,
    DnsQuery,
    ImageLoad,
    DriverLoad,
    ProcessAccess,
    CreateRemoteThread,
    RawAccessThread,
    PipeCreated,
    WmiEvent,
    PsScript,
    PsModule,
    WindowsEvent,
    Auditd,
    LinuxLog,
    Heartbeat,
)

Event = Annotated[
    Union[*EVENT_MODELS],  # type: ignore[valid-type]
    Field(discriminator="event_type"),
]
EVENT_ADAPTER: TypeAdapter[Envelope] = TypeAdapter(Event)

MODEL_BY_TYPE: dict[str, type[Envelope]] = {
    m.model_fields["event_type"].default: m for m in EVENT_MODELS
}
EVENT_TYPES: tuple[str, ...] = tuple(MODEL_BY_TYPE)


@cache
def own_logsource(model: type[Envelope]) -> Logsource:
    """The logsource an event of ``model`` has when it names none."""
    return model.model_fields["logsource"].get_default(call_default_factory=True)


def envelope_fields() -> tuple[str, ...]:
    """Names of the fields every event model shares."""
    return tuple(Envelope.model_fields)


def category_fields(event_type: str) -> tuple[str, ...]:
    """Sigma fields a given event type declares, beyond the envelope."""
    shared = set(Envelope.model_fields) | {"event_type"}
    return tuple(f for f in MODEL_BY_TYPE[event_type].model_fields if f not in shared)


def parse_event(data: dict[str, object] | str | bytes) -> Envelope:
    """Validate one event (a dict or JSON text) against the contract; raises ValidationError."""
    if isinstance(data, str | bytes):
        return EVENT_ADAPTER.validate_json(data)
    return EVENT_ADAPTER.validate_python(data)
