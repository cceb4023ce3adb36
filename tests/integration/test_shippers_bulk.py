"""Real shippers speaking the Elasticsearch bulk API into the gateway over HTTPS.

Each one carries the same file of real Windows telemetry (OTRF recordings in NXLog's JSON
layout, with malformed lines slipped in) to a TLS gateway on the real Kafka. Proved per
shipper: every distinct record is one event in Kafka (the recordings' byte-identical
duplicate lines are written once), every malformed line is in the DLQ with its reason,
and the default rule set finds on the events read back from Kafka exactly what it finds
on the events ``sigstream replay`` makes of the same file.

The shippers run as our own processes with their own configuration, pid file, control
socket and state under the test's folder, never as the system's services. A shipper that
is not installed skips its test, except in CI (``CI=true``), where ``.ci/run`` installs
them and a missing one fails.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch, helpers

from tests.integration.shipper_support import (
    MALFORMED,
    Gateway,
    build_corpus,
    check,
    delivered,
    gateway,
    need_program,
    wait_for,
)

pytestmark = pytest.mark.integration

__all__ = ["gateway"]  # the fixture, used by name

#: Where .ci/run unpacks Debian's rsyslog (it conflicts with syslog-ng as a package).
RSYSLOG_ROOT = Path(os.environ.get("SIGSTREAM_RSYSLOG_ROOT", "/opt/rsyslog-private"))


def test_python_client_bulk_helper(gateway: Gateway, tmp_path: Path) -> None:
    """The official client's ``streaming_bulk``: ApiKey ``id:token``, gzip, the CA file;
    it reads each item's status, so its own counts prove the per-item answers."""
    corpus = build_corpus(tmp_path / "otrf.json")
    es = Elasticsearch(
        gateway.server.url,
        api_key=("python-client", gateway.token),
        ca_certs=str(gateway.ca),
        http_compress=True,
        request_timeout=60,
    )
    assert es.info()["version"]["number"].startswith("8.")
    ok = failed = 0
    statuses = []
    for success, item in helpers.streaming_bulk(
        es,
        (line.decode() for line in corpus.lines),
        index="winlogbeat-otrf",
        chunk_size=500,
        max_retries=3,
        raise_on_error=False,
    ):
        ok += success
        failed += not success
        if not success:
            statuses.append(next(iter(item.values()))["status"])
    assert (ok, failed) == (corpus.records - len(MALFORMED), len(MALFORMED))
    assert statuses == [400] * len(MALFORMED)
    seen = wait_for(gateway, len(corpus.expected_ids), len(MALFORMED))
    assert seen == (len(corpus.expected_ids), len(MALFORMED))
    check(corpus, delivered(gateway), "elasticsearch-py streaming_bulk")


def test_syslog_ng_elasticsearch_http(gateway: Gateway, tmp_path: Path) -> None:
    """Debian's syslog-ng tailing the file into ``elasticsearch-http()`` (Basic auth with
    the token as password, TLS with the gateway's CA, batches of 500 lines)."""
    program = need_program("syslog-ng", "syslog-ng (Debian syslog-ng-core + syslog-ng-mod-http)")
    scl = Path("/usr/share/syslog-ng/include/scl/elasticsearch/elastic-http.conf")
    if not scl.is_file():
        need_program(None, "syslog-ng's elasticsearch-http() (Debian syslog-ng-scl)")
    corpus = build_corpus(tmp_path / "otrf.json")
    run = gateway.run
    conf = run / "syslog-ng.conf"
    conf.write_text(
        f"""@version: 3.38
@include "scl.conf"
options {{ stats-freq(0); log-msg-size(1048576); keep-hostname(yes); }};
source s_otrf {{
  file("{corpus.path}" flags(no-parse) follow-freq(1) log-msg-size(1048576));
}};
destination d_sigstream {{
  elasticsearch-http(
    url("https://127.0.0.1:{gateway.port}/_bulk")
    index("winlogbeat-otrf")
    type("")
    user("syslog-ng")
    password("{gateway.token}")
    template("$MSG")
    batch-lines(500)
    batch-timeout(500)
    workers(2)
    timeout(60)
    tls(ca-file("{gateway.ca}") peer-verify(yes))
  );
}};
log {{ source(s_otrf); destination(d_sigstream); }};
"""
    )
    log = (run / "syslog-ng.log").open("wb")
    proc = subprocess.Popen(
        [
            program,
            "-F",
            "--no-caps",
            "-f",
            str(conf),
            "-p",
            str(run / "syslog-ng.pid"),
            "-c",
            str(run / "syslog-ng.ctl"),
            "-R",
            str(run / "syslog-ng.persist"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    gateway.processes.append(proc)
    seen = wait_for(gateway, len(corpus.expected_ids), len(MALFORMED))
    assert seen == (len(corpus.expected_ids), len(MALFORMED)), (
        seen,
        (run / "syslog-ng.log").read_text()[-2000:],
    )
    check(corpus, delivered(gateway), "syslog-ng elasticsearch-http()")


def test_rsyslog_omelasticsearch(gateway: Gateway, tmp_path: Path) -> None:
    """Debian's rsyslog: imfile -> omelasticsearch in bulk mode over TLS, Basic auth with
    the token as password; the items the gateway refuses land in its error file."""
    program = need_program(
        str(RSYSLOG_ROOT / "usr/sbin/rsyslogd"), "rsyslog (Debian rsyslog + rsyslog-elasticsearch)"
    )
    modules = RSYSLOG_ROOT / "usr/lib/x86_64-linux-gnu/rsyslog"
    if not (modules / "omelasticsearch.so").is_file():
        need_program(None, "rsyslog's omelasticsearch (Debian rsyslog-elasticsearch)")
    corpus = build_corpus(tmp_path / "otrf.json")
    run = gateway.run
    (run / "rsyslog-work").mkdir()
    errors = run / "rsyslog-errors.json"
    conf = run / "rsyslog.conf"
    conf.write_text(
        f"""global(workDirectory="{run / "rsyslog-work"}" maxMessageSize="1m")
module(load="imfile")
module(load="omelasticsearch")
template(name="line" type="string" string="%rawmsg%")
input(type="imfile" File="{corpus.path}" Tag="otrf" ruleset="sigstream")
ruleset(name="sigstream") {{
  action(type="omelasticsearch"
         server="127.0.0.1" serverport="{gateway.port}" usehttps="on"
         tls.cacert="{gateway.ca}"
         uid="rsyslog" pwd="{gateway.token}"
         searchIndex="winlogbeat-otrf" template="line"
         esVersion.major="8"
         bulkmode="on" maxbytes="4m"
         queue.type="linkedList" queue.dequeueBatchSize="500"
         action.resumeRetryCount="-1"
         errorfile="{errors}")
}}
"""
    )
    log = (run / "rsyslog.log").open("wb")
    proc = subprocess.Popen(
        [program, "-n", "-f", str(conf), "-i", str(run / "rsyslog.pid"), "-M", str(modules)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    gateway.processes.append(proc)
    seen = wait_for(gateway, len(corpus.expected_ids), len(MALFORMED))
    assert seen == (len(corpus.expected_ids), len(MALFORMED)), (
        seen,
        (run / "rsyslog.log").read_text()[-2000:],
    )
    check(corpus, delivered(gateway), "rsyslog omelasticsearch")
    # rsyslog read the per-item answer: the refused items (only those) are in its file.
    assert errors.is_file()
    assert errors.read_text().count('"status":400') + errors.read_text().count(
        '"status": 400'
    ) >= len(MALFORMED)


def test_basic_auth_header_of_the_shippers_reaches_the_gateway(gateway: Gateway) -> None:
    """The handshake over TLS with each credential spelling the shippers use."""
    import httpx

    pair = base64.b64encode(f"winlogbeat:{gateway.token}".encode()).decode()
    for auth in (f"ApiKey {pair}", f"Basic {pair}", f"Bearer {gateway.token}"):
        resp = httpx.get(
            gateway.server.url + "/", headers={"Authorization": auth}, verify=str(gateway.ca)
        )
        assert resp.status_code == 200 and resp.headers["x-elastic-product"] == "Elasticsearch"
