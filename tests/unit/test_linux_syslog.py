"""Plain-text syslog entries become ``linux_log`` events (pure, no services): the service
from the program or facility, sudo's ``KEY=value`` fields, RFC 3164's year-less time,
stable ids for re-sent lines, and SigmaHQ's own sudo/auth rules firing on the result."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from detections.compiler.plan import load_plan
from detections.engine.apply import match_events
from ingest.adapters.linux_syslog import entry_time, key_values, service_for
from ingest.gateway import syslog
from ingest.gateway.parse import Accepted, Identity, Limits
from ingest.gateway.syslog_server import Judged, message_item
from schemas.events import parse_event
from tests.unit.test_linux_macos_rules import SIGMA

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
SENSOR = Identity("acme", "web-01")
RELAY = Identity("acme", "collector", relay=True)


def through_listener(line: bytes, identity: Identity = RELAY) -> dict:
    """One syslog message the way the listener judges it, as the event Kafka receives."""
    judged = Judged(0, syslog.Frame(line, len(line)), syslog.parse_message(line), None, None)
    result = message_item(judged, identity, Limits(), NOW)
    assert isinstance(result, Accepted), result
    return json.loads(result.value)


SUDO_3164 = (
    b"<85>Dec 31 23:59:58 web-01 sudo[4242]: alice : TTY=pts/0 ; PWD=/home/alice ; "
    b"USER=#-1 ; COMMAND=/usr/bin/id"
)


def test_a_sudo_line_becomes_a_sudo_event_with_its_fields() -> None:
    event = through_listener(SUDO_3164)
    assert event["event_type"] == "linux_log"
    assert (event["logsource"]["product"], event["logsource"]["service"]) == ("linux", "sudo")
    assert (event["host"], event["sensor_id"], event["program"], event["pid"]) == (
        "web-01",
        "web-01",  # a relay sends for the host the line names
        "sudo",
        "4242",
    )
    assert event["extra"]["USER"] == "#-1" and event["extra"]["COMMAND"] == "/usr/bin/id"
    # December's line read on January 2nd is last year's.
    assert event["event_time"].startswith("2025-12-31T23:59:58")
    parse_event(event)  # a valid schema event


def test_a_sensor_credential_keeps_its_own_sensor_id_and_fills_a_missing_host() -> None:
    event = through_listener(b"<13>1 2026-01-02T11:59:00Z - cron - - - (root) CMD (true)", SENSOR)
    assert (event["sensor_id"], event["host"]) == ("web-01", "web-01")
    assert event["logsource"]["service"] == "cron"  # from the APP-NAME


def test_a_re_sent_line_has_the_same_event_id_and_another_line_another() -> None:
    first, again = through_listener(SUDO_3164), through_listener(SUDO_3164)
    other = through_listener(SUDO_3164.replace(b"#-1", b"root"))
    assert first["event_id"] == again["event_id"] != other["event_id"]


@pytest.mark.parametrize(
    ("program", "facility", "service"),
    [
        ("sshd", 4, "sshd"),
        ("CRON", 9, "cron"),
        ("freshclam", 3, "clamav"),
        ("pkexec", 10, "auth"),
        ("su", 4, "auth"),
        ("kernel", 0, "syslog"),
        (None, 1, "syslog"),
    ],
)
def test_service_from_program_then_facility(
    program: str | None, facility: int, service: str
) -> None:
    assert service_for(program, facility) == service


def test_key_values_in_both_sudo_spellings_and_bounded() -> None:
    assert key_values("a : TTY=pts/0 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh -c id") == {
        "TTY": "pts/0",
        "PWD": "/tmp",
        "USER": "root",
        "COMMAND": "/bin/sh -c id",
    }
    assert key_values("x [USER=root] [CWD=/tmp]") == {"USER": "root", "CWD": "/tmp"}
    assert len(key_values(" ; ".join(f"K{i}=v" for i in range(100)))) == 32
    assert key_values("no pairs here, lower=case") == {}


def test_times() -> None:
    assert entry_time("2026-01-02T10:00:00+02:00", 5424, NOW) == datetime(2026, 1, 2, 8, tzinfo=UTC)
    assert entry_time("Jan  2 11:00:00", 3164, NOW) == datetime(2026, 1, 2, 11, tzinfo=UTC)
    assert entry_time("Feb 30 11:00:00", 3164, NOW) == NOW  # not a date: arrival time
    assert entry_time(None, 5424, NOW) == NOW


@pytest.mark.parametrize(
    ("rule", "line", "benign"),
    [
        (
            "rules-emerging-threats/2019/Exploits/CVE-2019-14287/"
            "lnx_sudo_exploit_cve_2019_14287.yml",
            SUDO_3164,
            SUDO_3164.replace(b"#-1", b"root"),
        ),
        (
            "rules-emerging-threats/2021/Exploits/CVE-2021-4034/"
            "lnx_auth_exploit_cve_2021_4034_pwnkit_lpe.yml",
            b"<84>Jan  2 11:00:00 web-01 pkexec[77]: pkexec --version: The value for "
            b"environment variable XAUTHORITY contains suspicious content [USER=root] "
            b"[TTY=/dev/pts/0] [CWD=/tmp] [COMMAND=GCONV_PATH=.]",
            b"<84>Jan  2 11:00:00 web-01 pkexec[77]: pam_unix(polkit-1:session): session "
            b"opened for user root",
        ),
    ],
)
def test_sigmahq_rules_fire_on_syslog_lines(rule: str, line: bytes, benign: bytes) -> None:
    path: Path = SIGMA / rule
    if not path.is_file():
        pytest.skip(f"SigmaHQ rule {rule} not found under {SIGMA} (expected ../shared/data)")
    plan = load_plan([path])
    assert len(plan.rules) == 1
    event = through_listener(line)
    assert [p for p, _ in match_events(plan, [event])] == [0]
    assert list(match_events(plan, [through_listener(benign)])) == []
