"""The Linux sensor's pure parts, without a kernel: mapping to schema events (and Sigma's
Linux rules firing on them), the TCP tables, fanotify records, watch bounds, the parent
memory, the configuration and its reload, the bounded buffers' drop accounting, and the
heartbeat's tamper fields."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.agent import SensorAgent
from ingest.client import GatewayClient
from ingest.sensor.config import ConfigError, SensorConfig, parse_config
from ingest.sensor.execs import ExecCollector, ParentCache
from ingest.sensor.files import (
    FAN_CLOSE_WRITE,
    FAN_Q_OVERFLOW,
    FileCollector,
    parse_events,
    watch_targets,
)
from ingest.sensor.mapping import (
    ConnectionObservation,
    FileObservation,
    file_event,
    network_connection,
    process_creation,
)
from ingest.sensor.network import decode_address, outbound, parse_table
from ingest.sensor.procconn import available
from ingest.sensor.procfs import ProcessInfo
from ingest.sensor.runner import Sensor, SourceBuffer, stop_reason_for
from ingest.sensor.tamper import digest_files
from schemas.events import Heartbeat, parse_event

AT = 1_800_000_000_000_000_000


def info(
    pid: int, image: str | None, cmd: str | None, ppid: int | None = 1, **kw: object
) -> ProcessInfo:
    values: dict[str, object] = {
        "pid": pid,
        "guid": f"guid-{pid}",
        "image": image,
        "command_line": cmd,
        "current_directory": "/root",
        "uid": 0,
        "user": "root",
        "parent_pid": ppid,
        "start_ticks": 100 + pid,
        "comm": image.rsplit("/", 1)[-1] if image else None,
        "complete": image is not None and cmd is not None,
    }
    values.update(kw)
    return ProcessInfo(**values)  # type: ignore[arg-type]


# -- mapping ---------------------------------------------------------------------------


def test_process_creation_has_sigma_linux_fields_and_validates() -> None:
    parent = info(10, "/usr/bin/bash", "bash -c echo aWQK | base64 -d | sh")
    child = info(11, "/usr/bin/base64", "base64 -d", ppid=10)
    event = process_creation("web-01", "WEB-01", AT, child, parent)
    parsed = parse_event(event)
    assert parsed.event_type == "process_creation"
    assert parsed.logsource.product == "linux" and parsed.logsource.category == "process_creation"
    assert (event["Image"], event["CommandLine"]) == ("/usr/bin/base64", "base64 -d")
    assert event["ParentImage"] == "/usr/bin/bash"
    assert event["ParentCommandLine"].startswith("bash -c ")
    assert (event["ProcessId"], event["ParentProcessId"]) == ("11", "10")
    assert (event["ProcessGuid"], event["ParentProcessGuid"]) == ("guid-11", "guid-10")
    assert event["User"] == "root" and event["CurrentDirectory"] == "/root"
    assert "extra" not in event
    assert process_creation("web-01", "WEB-01", AT, child, parent)["event_id"] == event["event_id"]


def test_a_process_gone_before_procfs_is_marked_incomplete_not_invented() -> None:
    gone = info(12, None, None, ppid=None, complete=False, comm=None, start_ticks=None)
    event = process_creation("web-01", "WEB-01", AT, gone, info(10, "/usr/bin/bash", "bash"))
    parse_event(event)
    assert "Image" not in event and "CommandLine" not in event
    assert event["extra"] == {"sensor_incomplete": "true"}
    assert event["ParentProcessId"] == "10" and event["ParentImage"] == "/usr/bin/bash"


def test_file_and_network_events() -> None:
    wget = info(20, "/usr/bin/wget", "wget -O /tmp/x http://a/x")
    f = file_event("web-01", "WEB-01", FileObservation("/tmp/x", 20, AT, wget))
    assert parse_event(f).event_type == "file_event"
    assert (f["TargetFilename"], f["Image"], f["logsource"]["product"]) == (
        "/tmp/x",
        "/usr/bin/wget",
        "linux",
    )
    unknown = file_event("web-01", "WEB-01", FileObservation("/tmp/y", 21, AT, None))
    assert unknown["ProcessId"] == "21" and "Image" not in unknown
    bash = info(30, "/usr/bin/bash", "bash -i")
    obs = ConnectionObservation(
        "tcp", "10.0.0.5", 40000, "203.0.113.9", 4444, False, 77, 0, AT, bash
    )
    n = network_connection("web-01", "WEB-01", obs)
    assert parse_event(n).event_type == "network_connection"
    assert (n["DestinationIp"], n["DestinationPort"], n["Initiated"]) == (
        "203.0.113.9",
        "4444",
        "true",
    )
    assert (n["SourceIp"], n["SourcePort"], n["Image"]) == ("10.0.0.5", "40000", "/usr/bin/bash")


def test_sigmahq_linux_rules_fire_on_the_sensors_events() -> None:
    from tests.unit.test_linux_macos_rules import firing

    parent = info(10, "/usr/bin/bash", "bash")
    find = info(11, "/usr/bin/find", "find / -perm -4000 -type f")
    assert firing(
        "rules/linux/process_creation/proc_creation_lnx_susp_find_execution.yml",
        [process_creation("s", "h", AT, find, parent)],
    ) == [0]
    wget = info(20, "/usr/bin/wget", "wget -O /tmp/x http://a/x")
    assert firing(
        "rules/linux/file_event/file_event_lnx_wget_download_file_in_tmp_dir.yml",
        [file_event("s", "h", FileObservation("/tmp/x", 20, AT, wget))],
    ) == [0]
    bash = info(30, "/usr/bin/bash", "bash -i")
    out = ConnectionObservation(
        "tcp", "10.0.0.5", 40000, "203.0.113.9", 4444, False, 77, 0, AT, bash
    )
    loop = ConnectionObservation("tcp", "127.0.0.1", 40001, "127.0.0.1", 9, False, 78, 0, AT, bash)
    assert firing(
        "rules/linux/network_connection/net_connection_lnx_back_connect_shell_dev.yml",
        [network_connection("s", "h", out), network_connection("s", "h", loop)],
    ) == [0]


# -- network ----------------------------------------------------------------------------

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid ..."
TAIL = "00000000:00000000 00:00000000 00000000"
TCP = "\n".join(
    [
        HEADER,
        f"   0: 0100007F:0016 00000000:0000 0A {TAIL}     0        0 100 1",
        f"   1: 0500000A:9C40 0971000C:115C 02 {TAIL}     0        0 200 1",
        f"   2: 0100007F:0016 0100007F:D431 01 {TAIL}     0        0 300 1",
        f"   3: 0500000A:9C41 0971000C:01BB 06 {TAIL}     0        0 0 1",
        "   4: garbage",
    ]
)
MAPPED = "0000000000000000FFFF0000"
V6 = "B80D0120000000000000000"
TCP6 = "\n".join(
    [
        HEADER,
        f"   0: {MAPPED}0500000A:9C42 {MAPPED}0971000C:0050 01 {TAIL}  1000        0 400 1",
        f"   1: {V6}001000000:9C43 {V6}002000000:0050 01 {TAIL}  1000        0 500 1",
    ]
)


def test_proc_net_addresses_decode() -> None:
    assert decode_address("0100007F:0016") == ("127.0.0.1", 22)
    assert decode_address("0971000C:115C") == ("12.0.113.9", 4444)
    assert decode_address("B80D0120000000000000000001000000:0050") == ("2001:db8::1", 80)


def test_outbound_are_connecting_or_connected_sockets_on_non_listening_ports() -> None:
    rows = parse_table(TCP, False) + parse_table(TCP6, True)
    assert len(rows) == 6  # the garbage row is skipped
    out = outbound(rows)
    assert [(s.remote_ip, s.remote_port, s.inode) for s in out] == [
        ("12.0.113.9", 4444, 200),  # SYN_SENT
        ("12.0.113.9", 80, 400),  # IPv4-mapped IPv6, shown as IPv4
        ("2001:db8::2", 80, 500),
    ]  # the listener, the accepted loopback connection (local port 22 listens) and
    # TIME_WAIT (no inode) are not outbound


# -- files --------------------------------------------------------------------------------


def test_fanotify_records_parse_and_a_truncated_tail_ends_the_read() -> None:
    one = struct.pack("=IBBHQii", 24, 3, 0, 24, FAN_CLOSE_WRITE, 7, 4242)
    overflow = struct.pack("=IBBHQii", 24, 3, 0, 24, FAN_Q_OVERFLOW, -1, 0)
    events = list(parse_events(one + overflow + one[:10]))
    assert [(e.mask, e.fd, e.pid) for e in events] == [
        (FAN_CLOSE_WRITE, 7, 4242),
        (FAN_Q_OVERFLOW, -1, 0),
    ]
    assert list(parse_events(struct.pack("=IBBHQii", 0, 3, 0, 24, 8, 7, 1))) == []


def test_watch_targets_are_bounded_and_skip_missing_paths(tmp_path: Path) -> None:
    for d in ("a/b/c", "a/d", "e"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "f.conf").write_text("x")
    paths = [str(tmp_path / "a"), str(tmp_path / "missing"), str(tmp_path / "f.conf")]
    flat, left = watch_targets(paths, recursive=False, max_marks=10)
    assert flat == [str(tmp_path / "a"), str(tmp_path / "f.conf")] and left == 0
    deep, left = watch_targets(paths, recursive=True, max_marks=3)
    assert deep == [str(tmp_path / p) for p in ("a", "a/b", "a/b/c")] and left == 2


# -- exec memory --------------------------------------------------------------------------


def test_parent_cache_names_forked_children_and_forgets_reused_pids() -> None:
    cache = ParentCache(size=3)
    cache.exec(info(10, "/usr/bin/bash", "bash"))
    cache.fork(11, 10)
    assert cache.info[11].image == "/usr/bin/bash" and cache.parent_pid(11) == 10
    cache.fork(12, 99)  # unknown parent: no stale entry kept for 12
    assert 12 not in cache.info
    for pid in range(20, 25):
        cache.exec(info(pid, "/usr/bin/true", "true"))
    assert len(cache.info) == 3 and len(cache.forked_by) <= 3


# -- buffers, config, reload, heartbeat ---------------------------------------------------


def test_a_full_buffer_drops_and_counts_never_blocks() -> None:
    buffer = SourceBuffer(size=3)
    results = [buffer.put({"n": i}) for i in range(5)]
    assert results == [True, True, True, False, False] and buffer.dropped == 2
    assert [e["n"] for e in buffer.take(10)] == [0, 1, 2] and len(buffer) == 0


def test_config_defaults_and_clear_errors() -> None:
    cfg = parse_config(b"sensor_id: web-01\n")
    assert cfg.sources.process.enabled and "/tmp" in cfg.sources.file.paths
    assert cfg.heartbeat_interval_s == 60 and cfg.queue_size == 10_000
    with pytest.raises(ConfigError, match=r"sources\.file\.max_marks"):
        parse_config(b"sources: {file: {max_marks: 0}}\n")
    with pytest.raises(ConfigError, match="sourcez"):
        parse_config(b"sourcez: {}\n")
    with pytest.raises(ConfigError, match="YAML"):
        parse_config(b"a: [\n")
    assert SensorConfig(sensor_id="a").restart_needed(SensorConfig(sensor_id="b")) == ["sensor_id"]
    off = parse_config(b"sensor_id: a\nsources: {network: {enabled: false}}\n")
    assert SensorConfig(sensor_id="a").restart_needed(off) == ["sources.network.enabled"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_reload_applies_paths_and_intervals_and_keeps_the_old_config_when_bad(
    tmp_path: Path,
) -> None:
    conf = _write(tmp_path / "s.yml", "sensor_id: a\nheartbeat_interval_s: 30\n")
    sensor = Sensor(conf)
    first = sensor.config_sha256
    _write(conf, "sensor_id: a\nheartbeat_interval_s: 5\nqueue_size: 50\n")
    assert sensor.reload() and sensor.config.heartbeat_interval_s == 5
    assert sensor.config.queue_size == 50 and sensor.config_sha256 != first
    _write(conf, "sensor_id: a\nheartbeat_interval_s: -1\n")
    assert not sensor.reload() and sensor.config.heartbeat_interval_s == 5
    _write(conf, "sensor_id: other\nheartbeat_interval_s: 7\nsources: {file: {enabled: false}}\n")
    assert sensor.reload()
    assert sensor.config.sensor_id == "a" and sensor.config.heartbeat_interval_s == 7
    assert sensor.config.sources.file.enabled  # started or not at start only


def test_heartbeat_carries_hashes_sources_drops_and_stop_reason(tmp_path: Path) -> None:
    conf = _write(tmp_path / "s.yml", "sensor_id: a\n")
    sensor = Sensor(conf)
    sensor.buffers["file"] = SourceBuffer(1)
    sensor.buffers["file"].put({})
    sensor.buffers["file"].put({})
    sensor.disabled["network"] = "disabled in the configuration"
    client = GatewayClient("http://127.0.0.1:9", "t", tmp_path / "spool", fsync="never")
    agent = SensorAgent(client, "a", "A", status=sensor.status)
    hb = agent.heartbeat(stop_reason=stop_reason_for(15))
    client.close()
    assert isinstance(hb, Heartbeat)
    assert hb.stop_reason in ("SIGTERM", "SIGTERM (systemd stop)")
    assert hb.sources == {"network": "unavailable: disabled in the configuration"}
    assert hb.dropped_by_source == {"file": 1} and hb.events_dropped == 1
    assert hb.sensor_sha256 and len(hb.sensor_sha256) == 64
    assert hb.config_sha256 == sensor.config_sha256
    spooled = [json.loads(x) for p in (tmp_path / "spool").glob("*.seg") for x in p.open("rb")]
    assert spooled[-1]["sources"] == hb.sources


def test_code_digest_changes_with_any_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    before = digest_files([a, b], tmp_path)
    assert digest_files([b, a], tmp_path) == before
    b.write_text("y = 3\n")
    assert digest_files([a, b], tmp_path) != before


# -- the real kernel (root only) ----------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (fanotify, connector)")


def _collect(collector: object, action: object, want: object, timeout: float = 10.0) -> list:
    """Start ``collector``, run ``action``, wait until an event satisfies ``want``."""
    got: list[dict] = []
    collector.start(lambda e: got.append(e) or True)  # type: ignore[attr-defined]
    time.sleep(0.3)  # the exec reader process starting
    try:
        action()  # type: ignore[operator]
        deadline = time.monotonic() + timeout
        while not any(want(e) for e in got) and time.monotonic() < deadline:  # type: ignore[operator]
            time.sleep(0.05)
    finally:
        collector.stop()  # type: ignore[attr-defined]
    return got


@needs_root
def test_fanotify_names_the_file_and_its_writer(tmp_path: Path) -> None:
    collector = FileCollector("s", "h", [str(tmp_path)])
    target = tmp_path / "dropped.sh"
    got = _collect(
        collector,
        # The shell writes (redirect) and lives on: its image is still in procfs. (A
        # writer gone at once is named from the exec source's memory in the sensor.)
        lambda: subprocess.run(["sh", "-c", f"echo x > {target}; sleep 0.5"], check=True),
        lambda e: e.get("TargetFilename") == str(target),
    )
    (event,) = [e for e in got if e.get("TargetFilename") == str(target)]
    assert event["Image"] == os.path.realpath("/bin/sh") and collector.status() == "stopped"


@needs_root
def test_exec_reader_process_names_a_short_lived_command_and_its_parent() -> None:
    if available() is not None:
        pytest.skip(f"connector unavailable: {available()}")
    collector = ExecCollector("s", "h")
    marker = f"sigstream-unit-{os.getpid()}"
    got = _collect(
        collector,
        lambda: subprocess.run(["sh", "-c", f"true {marker}; true"], check=True),
        lambda e: marker in (e.get("CommandLine") or ""),
    )
    (event,) = [e for e in got if marker in (e.get("CommandLine") or "")]
    assert event["Image"] == os.path.realpath("/bin/sh")
    assert event["ParentImage"] == os.path.realpath(sys.executable)


# -- the CLI --------------------------------------------------------------------------------


def test_cli_example_config_is_valid_and_check_names_the_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sigstream.cli import app

    runner = CliRunner()
    example = runner.invoke(app, ["sensor", "example-config"])
    assert example.exit_code == 0
    cfg = parse_config(example.stdout.encode())
    assert cfg.sensor_id == "web-01" and cfg.sources.file.max_marks == 256
    bad = _write(tmp_path / "bad.yml", "sources: {file: {max_marks: 0}}\n")
    result = runner.invoke(app, ["sensor", "check", "--config", str(bad)])
    assert result.exit_code == 2 and "max_marks" in result.output
    good = _write(tmp_path / "good.yml", "sources: {auditd: {enabled: false}}\n")
    result = runner.invoke(app, ["sensor", "check", "--config", str(good)])
    assert result.exit_code == 0 and "auditd: disabled in the configuration" in result.stdout


def test_an_exec_storm_demotes_the_real_time_reader_for_a_while() -> None:
    """The SCHED_FIFO reader must never starve the host: over its CPU budget it runs at
    normal priority for the cool-down (said in the source's status), then goes back."""
    from ingest.sensor.execs import RealtimeGuard

    calls: list[bool] = []
    guard = RealtimeGuard(True, budget=0.3, window_s=1.0, cooldown_s=10.0, apply=calls.append)
    assert guard.check(0.0, 0.0) is None
    assert guard.check(1.0, 0.2) is None  # 20 % of a core: within budget
    note = guard.check(2.0, 0.9)  # 70 % of a core in the last second
    assert note and "exec storm" in note and calls == [False] and not guard.realtime
    assert guard.check(5.0, 1.0) is None and calls == [False]  # still cooling down
    assert guard.check(12.5, 1.1) == "" and calls == [False, True] and guard.realtime
    assert RealtimeGuard(False, apply=calls.append).check(99.0, 99.0) is None
    assert calls == [False, True]  # an inactive guard (no SCHED_FIFO) never changes anything
