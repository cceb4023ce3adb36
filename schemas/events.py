"""The telemetry contract: what a sensor sends, one pydantic model per event type.

This module is the single source of truth for event fields. The Spark schema, the
Elasticsearch mappings and the JSON Schema are all generated from these models
(see ``schemas.generate``); nothing else declares an event field by hand.

Field names follow Sigma's taxonomy (``Image``, ``CommandLine``, ``TargetObject`` ...) so
Sigma rules resolve against events without a field mapping. Every field a model does not
declare is kept in ``extra`` (nothing a sensor sent is dropped), and service logs without a
Sigma category (Security, System, Defender ...) use the generic ``WindowsEvent`` whose fields
all live in ``extra``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1

Text = str | None


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


def _sensor_logsource() -> Logsource:
    return Logsource(product="sigstream", service="heartbeat")


class Heartbeat(Envelope):
    """The sensor saying "I am alive", every ``expected_interval_s`` seconds.

    The backend's sensor-health job (docs/sensor-health.md) reads it: a sensor that sends
    neither events nor heartbeats for a few intervals is reported silent. It carries its own
    ``seq`` like any event, and the sensor's counters, so a gap the sensor knows about
    (dropped or still spooled events) is visible next to the gap the backend measures. Its
    logsource (product ``sigstream``) keeps it out of every Windows Sigma rule.
    """

    event_type: Literal["heartbeat"] = "heartbeat"
    logsource: Logsource = Field(default_factory=_sensor_logsource)
    expected_interval_s: int | None = Field(default=None, ge=1)
    agent_version: Text = None
    events_sent: int | None = Field(default=None, ge=0)
    events_dropped: int | None = Field(default=None, ge=0)
    events_spooled: int | None = Field(default=None, ge=0)


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
