"""The Linux sensor's process collectors: connector datagrams parsed without a kernel,
procfs read from a fake tree, and (as root) the real connector seeing a real exec."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from ingest.sensor.procconn import (
    CN_IDX_PROC,
    CN_VAL_PROC,
    EXEC,
    EXIT,
    FORK,
    ProcConnector,
    available,
    listen_message,
    parse_messages,
)
from ingest.sensor.procfs import join_command_line, parse_stat, process_guid, snapshot


def datagram(what: int, *ints: int, ts: int = 123) -> bytes:
    body = struct.pack("=IIQ", what, 0, ts) + struct.pack(f"={len(ints)}I", *ints)
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(body), 0) + body
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def test_exec_fork_exit_datagrams_are_parsed() -> None:
    (ev,) = parse_messages(datagram(EXEC, 41, 41))
    assert (ev.kind, ev.pid, ev.tgid, ev.timestamp_ns) == ("exec", 41, 41, 123)
    (ev,) = parse_messages(datagram(FORK, 1, 1, 42, 42))
    assert (ev.kind, ev.pid, ev.parent_pid) == ("fork", 42, 1)
    (ev,) = parse_messages(datagram(EXIT, 42, 42, 256, 17, 7, 7))
    assert (ev.kind, ev.pid, ev.exit_code, ev.parent_pid) == ("exit", 42, 256, 7)


def test_several_messages_in_one_datagram_and_truncation_never_raise() -> None:
    both = datagram(EXEC, 1, 1) + datagram(EXEC, 2, 2)
    assert [e.pid for e in parse_messages(both)] == [1, 2]
    for cut in range(len(both)):
        assert len(list(parse_messages(both[:cut]))) <= 2
    other = bytearray(datagram(EXEC, 3, 3))
    other[16:20] = struct.pack("=I", 99)  # another connector's message
    assert list(parse_messages(bytes(other))) == []


def test_listen_message_is_a_well_formed_netlink_datagram() -> None:
    msg = listen_message(port_id=7)
    length, kind, _, _, port = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) == 40 and kind == 3 and port == 7


def test_stat_with_spaces_and_parentheses_in_the_command_name() -> None:
    fields = " ".join(["S", "77"] + ["0"] * 17 + ["4242"] + ["0"] * 30)
    assert parse_stat(f"123 (evil) (name) {fields}") == ("evil) (name", 77, 4242)
    assert parse_stat("garbage") is None


def test_command_line_joins_arguments_with_spaces() -> None:
    assert join_command_line(b"sh\x00-c\x00echo hi\x00") == "sh -c echo hi"
    assert join_command_line(b"\xff\x00") == "\ufffd"


def test_snapshot_from_a_fake_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "sys/kernel/random").mkdir(parents=True)
    (tmp_path / "sys/kernel/random/boot_id").write_text("boot-1\n")
    pid = tmp_path / "500"
    pid.mkdir()
    fields = " ".join(["S", "1"] + ["0"] * 17 + ["999"] + ["0"] * 30)
    (pid / "stat").write_text(f"500 (curl) {fields}")
    (pid / "status").write_text("Name:\tcurl\nUid:\t0\t0\t0\t0\n")
    (pid / "cmdline").write_bytes(b"curl\x00-o\x00/tmp/x\x00")
    (pid / "exe").symlink_to("/usr/bin/curl")
    (pid / "cwd").symlink_to("/tmp")
    info = snapshot(500, proc=tmp_path)
    assert info.image == "/usr/bin/curl" and info.command_line == "curl -o /tmp/x"
    assert info.current_directory == "/tmp" and info.user == "root" and info.parent_pid == 1
    assert info.guid == process_guid("boot-1", 500, 999) and info.complete
    gone = snapshot(501, proc=tmp_path)
    assert gone.guid is None and not gone.complete


def test_the_guid_tells_pid_reuse_apart() -> None:
    assert process_guid("b", 10, 1) == process_guid("b", 10, 1)
    assert process_guid("b", 10, 1) != process_guid("b", 10, 2)


@pytest.mark.skipif(available() is not None, reason=f"connector unavailable: {available()}")
def test_the_real_connector_sees_a_real_exec_with_its_command_line() -> None:
    connector = ProcConnector()
    try:
        child = subprocess.Popen(["sleep", "1.5"])
        seen = None
        deadline = time.monotonic() + 5
        while seen is None and time.monotonic() < deadline:
            for ev in connector.read(0.5):
                if ev.kind == "exec" and ev.pid == child.pid:
                    seen = snapshot(ev.pid)
        child.wait()
    finally:
        connector.close()
    assert seen is not None, "no exec event for the child"
    assert seen.command_line == "sleep 1.5" and seen.parent_pid == os.getpid()
    assert seen.image and seen.image.endswith("/sleep")
