"""Elasticsearch 8.19.x, one node, from the integ-test-zip, run as an unprivileged user.

Elasticsearch refuses to start as root, so when infra runs as root (CI, this dev box) it
creates a system user and starts the node through ``runuser``. That user must be able to
reach the distribution, the data and the logs: when the project's cache/run folders are not
traversable by it (a clone under /root, mode 700), everything Elasticsearch needs moves to
``/var/lib/sigstream/<hash>/`` (see ``resolve_layout``). Run as a normal user, infra
starts the node as that same user and keeps everything in the project folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from common.settings import Settings
from infra import config
from infra.config import Layout
from infra.proc import (
    ServiceError,
    ServiceStatus,
    fail,
    pid_alive,
    port_open,
    progress,
    rotate,
    running_pid,
    spawn,
    terminate,
)

NAME = "elasticsearch"
# The server JVM's main class (the pid file holds the server, not the CLI launcher).
SERVER_MARKER = "org.elasticsearch.bootstrap.Elasticsearch"
CLUSTER_NAME = "sigstream"

# Launchers started by this process, so a failed launcher's exit code is seen at once.
_launchers: dict[Path, subprocess.Popen[bytes]] = {}


def address(settings: Settings) -> tuple[str, int]:
    return config.parse_hostport(settings.es_hosts[0], 9200)


def url(settings: Settings) -> str:
    host, port = address(settings)
    return f"http://{host}:{port}"


def _user_ids(name: str) -> tuple[int, list[int]] | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, [entry.pw_gid, *os.getgrouplist(name, entry.pw_gid)]


def runs_as_other_user() -> bool:
    """Only root needs (and can use) the separate user; others run ES as themselves."""
    return os.geteuid() == 0


def resolve_layout(settings: Settings) -> Layout:
    """The default layout, or the /var/lib fallback when the ES user can't reach it.

    A user that does not exist yet is judged as "other" (neither owner nor in the group of
    the folders), which is exactly what the system user created later will be.
    """
    layout = Layout.from_settings(settings)
    if settings.es_root is not None or not runs_as_other_user():
        return layout
    uid, gids = _user_ids(settings.es_user) or (-1, [])
    reachable = all(config.can_traverse(p, uid, gids) for p in (layout.es_cache, layout.es_run))
    if reachable:
        return layout
    return Layout.from_settings(settings, es_root=config.es_fallback_root(settings.cache_dir))


def ensure_user(name: str) -> tuple[int, int] | None:
    """Create the system user for Elasticsearch if needed; None when not running as root."""
    if not runs_as_other_user():
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        progress(f"creating system user {name!r} (Elasticsearch refuses to run as root)…")
        cmd = ["useradd", "--system", "--user-group", "--no-create-home"]
        cmd += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(NAME, f"useradd {name} failed: {result.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def make_reachable_dirs(*folders: Path) -> None:
    """mkdir -p with mode 755 on every folder created, whatever root's umask is.

    The ES user must traverse the whole chain (e.g. /var/lib/sigstream/<hash>/run).
    """
    for folder in folders:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        for created in missing:
            created.chmod(0o755)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def copy_config(home: Path, conf: Path) -> None:
    """Seed a node's own config folder from the distribution's (jvm.options, log4j2, ...),
    without elasticsearch.yml (written per node) and the keystore (created per node)."""
    for item in (home / "config").iterdir():
        target = conf / item.name
        if item.name in {"elasticsearch.yml", "elasticsearch.keystore"} or target.exists():
            continue
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copy2(item, target)


def prepare(settings: Settings, layout: Layout, home: Path) -> None:
    """Write the node's config folder (ES_PATH_CONF) and run folders, hand them to the ES user.

    The config lives in the run dir, not in the cached distribution, so stacks with
    different run dirs (the fault drills' private one) share the download safely.
    """
    host, port = address(settings)
    folders = (layout.es_run, layout.es_conf, layout.es_data, layout.es_logs, layout.es_tmp)
    make_reachable_dirs(*folders)
    copy_config(home, layout.es_conf)
    values = config.es_settings(
        host=host,
        port=port,
        data_dir=layout.es_data,
        logs_dir=layout.es_logs,
        cluster_name=CLUSTER_NAME,
        transport_port=settings.es_transport_port,
    )
    (layout.es_conf / "elasticsearch.yml").write_text(config.render_es_yml(values))
    ids = ensure_user(settings.es_user)
    if ids is None:
        return
    uid, gid = ids
    if home.stat().st_uid != uid:
        _chown_tree(home, uid, gid)
    # The config folder must be writable by ES (the keystore is created there on first start).
    _chown_tree(layout.es_conf, uid, gid)
    for folder in folders:
        os.chown(folder, uid, gid)
    for folder in (home, layout.es_run):
        if not config.can_traverse(folder, uid, [gid]):
            raise ServiceError(
                NAME,
                f"user {settings.es_user!r} cannot reach {folder}; set SIGSTREAM_ES_ROOT to a "
                "folder it can traverse",
            )


def status(settings: Settings, layout: Layout) -> ServiceStatus:
    pid = running_pid(layout.es_pid, SERVER_MARKER)
    host, port = address(settings)
    if pid is not None:
        state = "running"
    elif port_open(host, port):
        state = "external"
    else:
        state = "stopped"
    return ServiceStatus(NAME, state, pid, f"{host}:{port}", layout.es_server_log(CLUSTER_NAME))


def start(java_home: Path, settings: Settings, layout: Layout, home: Path) -> None:
    """Launch ``bin/elasticsearch -d -p <pid>`` detached (as the ES user when root)."""
    prepare(settings, layout, home)
    rotate(layout.es_launcher_log)
    with contextlib.suppress(OSError):
        layout.es_pid.unlink()
    cmd = [str(home / "bin" / "elasticsearch"), "-d", "-p", str(layout.es_pid)]
    if runs_as_other_user():
        cmd = ["runuser", "-u", settings.es_user, "--", *cmd]
    env = config.es_env(os.environ, java_home, settings.es_heap, layout.es_tmp)
    env["ES_PATH_CONF"] = str(layout.es_conf)
    # cwd matters: jvm.options writes gc.log and hs_err files relative to it.
    launcher = spawn(cmd, log_file=layout.es_launcher_log, env=env, cwd=layout.es_logs)
    _launchers[layout.es_pid] = launcher
    progress(
        f"started Elasticsearch {settings.es_version} (heap {settings.es_heap}), "
        f"logs in {layout.es_logs}"
    )


def health(settings: Settings, timeout: float = 5.0) -> str | None:
    """Cluster status colour, or None if the node does not answer.

    The stripped distribution has no ``GET /`` handler (rest-root module), so readiness is
    ``_cluster/health``.
    """
    target = f"{url(settings)}/_cluster/health?wait_for_status=yellow&timeout=2s"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    colour = body.get("status")
    return colour if isinstance(colour, str) else None


def wait_ready(settings: Settings, layout: Layout, deadline: float, announce: bool = True) -> None:
    """Block until the cluster is yellow or green, or raise naming the logs."""
    host, port = address(settings)
    if announce:
        progress(f"waiting for Elasticsearch on {host}:{port}…")
    logs = [layout.es_server_log(CLUSTER_NAME), layout.es_launcher_log]
    launcher = _launchers.get(layout.es_pid)
    while True:
        if port_open(host, port) and health(settings) in {"yellow", "green"}:
            _launchers.pop(layout.es_pid, None)
            return
        if launcher is not None and launcher.poll() not in (None, 0):
            _launchers.pop(layout.es_pid, None)
            message = f"bin/elasticsearch exited with code {launcher.returncode} during startup"
            raise fail(NAME, message, [layout.es_launcher_log])
        if launcher is not None and launcher.poll() == 0:
            pid = running_pid(layout.es_pid, SERVER_MARKER)
            if pid is None or not pid_alive(pid):
                raise fail(NAME, "the server process exited during startup", logs)
        if time.monotonic() >= deadline:
            raise fail(NAME, f"not ready on {host}:{port} before the timeout", logs)
        time.sleep(0.5)


def stop(layout: Layout, timeout: float) -> bool:
    """SIGTERM the node (it closes shards and exits), SIGKILL after ``timeout``."""
    pid = running_pid(layout.es_pid, SERVER_MARKER)
    if pid is None:
        return False
    progress(f"stopping Elasticsearch (pid {pid})…")
    if not terminate(pid, timeout):
        progress(f"Elasticsearch ignored SIGTERM for {timeout:.0f}s and was killed")
    with contextlib.suppress(OSError):
        layout.es_pid.unlink()
    launcher = _launchers.pop(layout.es_pid, None)
    if launcher is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            launcher.wait(timeout=5)
    return True


def wipe(layout: Layout) -> None:
    """Delete the node's data (indices, cluster state); the distribution stays cached."""
    shutil.rmtree(layout.es_data, ignore_errors=True)
