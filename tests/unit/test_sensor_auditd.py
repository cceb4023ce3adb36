"""The sensor's optional auditd source, without auditd: audit.log lines parsed into
``auditd`` events (quotes, hex arguments, user-space ``msg='...'``), a SigmaHQ auditd rule
firing on one, and the follower reading only new complete lines across a rotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest.sensor.auditd import AuditdCollector, parse_record, to_event
from schemas.events import parse_event

EXECVE = (
    'type=EXECVE msg=audit(1700000000.123:456): argc=4 a0="truncate" a1="-s" '
    'a2=2B34303936 a3="/tmp/implant"'
)
SYSCALL = (
    "type=SYSCALL msg=audit(1700000000.123:456): arch=c000003e syscall=59 success=yes "
    'exit=0 a0=55d0 a1=10 ppid=1 pid=42 auid=1000 uid=0 comm="truncate" '
    'exe="/usr/bin/truncate" key="exec"'
)
USER = (
    "type=SERVICE_STOP msg=audit(1700000001.000:457): pid=1 uid=0 auid=4294967295 "
    'msg=\'unit=auditd comm="systemd" exe="/usr/lib/systemd/systemd" res=success\''
)


def test_records_parse_with_auditds_own_names() -> None:
    rtype, ts, serial, fields = parse_record(EXECVE) or ("", 0, 0, {})
    assert (rtype, ts, serial) == ("EXECVE", 1700000000.123, 456)
    assert fields == {
        "argc": "4",
        "a0": "truncate",
        "a1": "-s",
        "a2": "+4096",
        "a3": "/tmp/implant",
    }
    syscall = parse_record(SYSCALL)
    assert syscall is not None and syscall[3]["a1"] == "10"  # a number, not hex text
    user = parse_record(USER)
    assert user is not None and user[3]["unit"] == "auditd" and user[3]["res"] == "success"
    assert parse_record("not an audit record") is None


def test_events_validate_and_unknown_keys_go_to_extra() -> None:
    event = parse_event(to_event("web-01", "WEB-01", parse_record(SYSCALL), 0))  # type: ignore[arg-type]
    assert event.event_type == "auditd" and event.logsource.service == "auditd"
    assert (event.type, event.exe, event.pid) == ("SYSCALL", "/usr/bin/truncate", "42")
    assert event.extra["key"] == "exec" and event.extra["arch"] == "c000003e"
    again = to_event("web-01", "WEB-01", parse_record(SYSCALL), 1)  # type: ignore[arg-type]
    assert again["event_id"] != event.event_id  # another record of the same serial


def test_a_sigmahq_auditd_rule_fires_on_a_parsed_line() -> None:
    from tests.unit.test_linux_macos_rules import firing

    events = [
        to_event("s", "h", parse_record(EXECVE), 0),  # type: ignore[arg-type]
        to_event("s", "h", parse_record(SYSCALL), 0),  # type: ignore[arg-type]
    ]
    assert firing("rules/linux/auditd/execve/lnx_auditd_binary_padding.yml", events) == [0]


def test_follower_reads_new_complete_lines_and_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(EXECVE + "\n")  # there before the sensor: not sent
    got: list[dict[str, Any]] = []
    collector = AuditdCollector("s", "h", log, interval_s=3600)
    collector.start(lambda e: got.append(e) or True)
    try:
        with log.open("a") as f:
            f.write(SYSCALL + "\n" + USER[:40])  # the last line is not finished
        assert collector.poll(got.append) == 1 and got[-1]["type"] == "SYSCALL"
        with log.open("a") as f:
            f.write(USER[40:] + "\ngarbage\n")
        assert collector.poll(got.append) == 1 and got[-1]["type"] == "SERVICE_STOP"
        assert collector.skipped == 1
        log.rename(tmp_path / "audit.log.1")  # rotation: a new file from the start
        log.write_text(EXECVE + "\n")
        assert collector.poll(got.append) == 1 and got[-1]["type"] == "EXECVE"
        assert collector.status() == "ok"
    finally:
        collector.stop()
    assert collector.status() == "stopped"


def test_absent_log_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    collector = AuditdCollector("s", "h", tmp_path / "none.log")
    collector.start(lambda e: True)
    assert (
        collector.status().startswith("unavailable: ")
        and "auditd not running" in collector.status()
    )
