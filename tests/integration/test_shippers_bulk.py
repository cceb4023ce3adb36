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
    TIGHT,
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


@pytest.mark.parametrize("gateway", [None, TIGHT], ids=["open", "rate_limited"], indirect=True)
def test_syslog_ng_elasticsearch_http(gateway: Gateway, tmp_path: Path) -> None:
    """Debian's syslog-ng tailing the file into ``elasticsearch-http()`` (Basic auth with
    the token as password, TLS with the gateway's CA, batches of 500 lines); rate limited,
    it retries the batches answered 429 until everything is in."""
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
    time-reopen(2)
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
            "-e",  # its own messages to stderr (our log file)
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
    label = "syslog-ng elasticsearch-http()" + (" (rate limited)" if gateway.options else "")
    check(corpus, delivered(gateway), label)


@pytest.mark.parametrize("gateway", [None, TIGHT], ids=["open", "rate_limited"], indirect=True)
def test_rsyslog_omelasticsearch(gateway: Gateway, tmp_path: Path) -> None:
    """Debian's rsyslog: imfile -> omelasticsearch in bulk mode over TLS, Basic auth with
    the token as password. It reads only the items of an answer: with ``retryfailures``
    it resubmits the 429/503 items (rate limited here) and stops the 400s (in the DLQ)."""
    program = need_program(
        str(RSYSLOG_ROOT / "usr/sbin/rsyslogd"), "rsyslog (Debian rsyslog + rsyslog-elasticsearch)"
    )
    modules = RSYSLOG_ROOT / "usr/lib/x86_64-linux-gnu/rsyslog"
    if not (modules / "omelasticsearch.so").is_file():
        need_program(None, "rsyslog's omelasticsearch (Debian rsyslog-elasticsearch)")
    malformed = MALFORMED
    if gateway.options is not None:  # rate limited: rsyslog must resubmit refused items
        # A source that is not a JSON object (an array, broken JSON) cannot be resubmitted
        # by rsyslog 8.2302 ("could not convert original request JSON back into JSON
        # object"), and the items after it in that answer are lost with it: this variant
        # keeps to malformed objects (docs/shippers.md).
        malformed = tuple(m for m in MALFORMED if m[1] in ("unknown_layout", "adapter_invalid"))
    corpus = build_corpus(tmp_path / "otrf.json", malformed)
    run = gateway.run
    (run / "rsyslog-work").mkdir()
    errors = run / "rsyslog-errors.json"
    conf = run / "rsyslog.conf"
    common = f"""type="omelasticsearch"
         server="127.0.0.1" serverport="{gateway.port}" usehttps="on"
         tls.cacert="{gateway.ca}"
         uid="rsyslog" pwd="{gateway.token}"
         searchIndex="winlogbeat-otrf" esVersion.major="8"
         bulkmode="on" maxbytes="4m"
         queue.type="linkedList" queue.dequeueBatchSize="500"
         retryfailures="on" retryruleset="sigstream" ratelimit.interval="0"
         action.resumeRetryCount="-1" errorfile="{errors}"
    """
    conf.write_text(
        f"""global(workDirectory="{run / "rsyslog-work"}" maxMessageSize="1m")
module(load="imfile")
module(load="omelasticsearch")
# The file's line as read; a resubmitted record carries the document in $! instead.
template(name="line" type="string" string="%rawmsg%")
template(name="document" type="string" string="%$!all-json-plain%")
input(type="imfile" File="{corpus.path}" Tag="otrf" ruleset="sigstream")
ruleset(name="sigstream") {{
  # A record the gateway answered comes back here with $.omes (retryfailures): 429 / 503
  # were not taken and go out again; a 400 is in the gateway's DLQ already.
  if strlen($.omes!status) > 0 then {{
    if $.omes!status == 429 or $.omes!status == 503 then {{
      action(name="sigstream-retry" template="document" {common})
    }}
    stop
  }}
  action(name="sigstream" template="line" {common})
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
    seen = wait_for(gateway, len(corpus.expected_ids), corpus.malformed)
    assert seen == (len(corpus.expected_ids), corpus.malformed), (
        seen,
        (run / "rsyslog.log").read_text()[-2000:],
    )
    # Resubmitted records are rendered from rsyslog's parsed copy ($!), not the line.
    label = "rsyslog omelasticsearch" + (" (rate limited)" if gateway.options else "")
    check(corpus, delivered(gateway), label, same_bytes=gateway.options is None)


def test_basic_auth_header_of_the_shippers_reaches_the_gateway(gateway: Gateway) -> None:
    """The handshake over TLS with each credential spelling the shippers use."""
    import httpx

    pair = base64.b64encode(f"winlogbeat:{gateway.token}".encode()).decode()
    for auth in (f"ApiKey {pair}", f"Basic {pair}", f"Bearer {gateway.token}"):
        resp = httpx.get(
            gateway.server.url + "/", headers={"Authorization": auth}, verify=str(gateway.ca)
        )
        assert resp.status_code == 200 and resp.headers["x-elastic-product"] == "Elasticsearch"
