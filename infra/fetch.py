"""Fetch JVM artifacts from Maven Central with ``mvn`` and keep them in the cache.

Why Maven and not direct downloads: Maven Central is the one JVM registry reachable from
every machine the project runs on, ``mvn`` resolves the transitive runtime class path of
the Kafka broker for us, and its local repository (~/.m2) makes a re-fetch after a cache
wipe offline. Each bundle lands in its own cache folder with a marker file naming exactly
what was fetched; when the marker matches, ``mvn`` is not run at all, so a warm ``up``
downloads nothing and starts no Maven JVM.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from infra.config import MAVEN_DIR
from infra.proc import ServiceError, progress

MARKER = ".sigstream-fetched"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
VERSION_PART = re.compile(r"-\d+\.\d[^-_]*(?:-[^_]*)?$")
MAVEN_TIMEOUT_S = 1800.0
SPARK_KAFKA_ARTIFACTS = (
    "spark-sql-kafka-0-10_2.13",
    "spark-token-provider-kafka-0-10_2.13",
    "kafka-clients",
    "commons-pool2",
)
# The newest connector on Maven Central when this was written (see infra/README.md).
NEWEST_KNOWN_SPARK_KAFKA = "4.2.0"


class FetchError(ServiceError):
    """Maven could not provide an artifact."""


def kafka_key(version: str) -> str:
    return f"org.apache.kafka:kafka_2.13:{version}"


def es_key(version: str) -> str:
    return f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"


def spark_kafka_key(version: str) -> str:
    return f"org.apache.spark:spark-sql-kafka-0-10_2.13:{version}"


def is_fetched(folder: Path, key: str) -> bool:
    """True when ``folder`` holds a complete fetch of ``key`` (marker written last)."""
    try:
        return (folder / MARKER).read_text().strip() == key
    except OSError:
        return False


def maven_settings_file(override: Path | None = None) -> Path:
    return override or MAVEN_DIR / "settings.xml"


def run_maven(
    service: str,
    pom: Path,
    args: Iterable[str],
    properties: dict[str, str],
    settings_file: Path,
) -> None:
    """Run ``mvn -B -q`` on one of infra/maven's POMs; raise FetchError with Maven's errors."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError(
            service, "`mvn` not found on PATH: install Maven 3.8+ (apt-get install maven)"
        )
    cmd = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-s",
        str(settings_file),
        "-f",
        str(pom),
        *args,
        *(f"-D{key}={value}" for key, value in properties.items()),
    ]
    try:
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=MAVEN_TIMEOUT_S,
            cwd=pom.parent,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise FetchError(
            service, f"mvn did not finish within {MAVEN_TIMEOUT_S:.0f}s: {' '.join(cmd)}"
        ) from exc
    if result.returncode != 0:
        output = ANSI.sub("", result.stdout + result.stderr).splitlines()
        errors = [line for line in output if line.startswith("[ERROR]")] or output
        shown = "\n".join(errors[:25])
        raise FetchError(
            service, f"mvn failed (exit {result.returncode}): {' '.join(cmd)}\n{shown}"
        )


def _fresh(folder: Path) -> Path:
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, folder: Path, key: str) -> None:
    """Mark ``staging`` complete and move it into place, replacing any older fetch."""
    (staging / MARKER).write_text(key + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)


def fetch_kafka(folder: Path, version: str, settings_file: Path) -> Path:
    """Kafka broker runtime class path (+ log4j2 binding) into ``folder``."""
    key = kafka_key(version)
    if is_fetched(folder, key):
        return folder
    progress(f"fetching Kafka {version} jars via mvn into {folder} (first run only)…")
    staging = _fresh(folder)
    try:
        run_maven(
            "kafka",
            MAVEN_DIR / "kafka.pom.xml",
            ["dependency:copy-dependencies"],
            {
                "kafka.version": version,
                "includeScope": "runtime",
                "outputDirectory": str(staging),
            },
            settings_file,
        )
        if not list(staging.glob(f"kafka_2.13-{version}.jar")):
            raise FetchError("kafka", f"mvn copied no kafka_2.13-{version}.jar into {staging}")
    except BaseException:
        _discard(staging)
        raise
    _publish(staging, folder, key)
    return folder


def pyspark_version() -> str | None:
    """The installed pyspark's version, without importing pyspark (and py4j)."""
    try:
        return metadata.version("pyspark")
    except metadata.PackageNotFoundError:
        return None


def pyspark_jars_dir() -> Path | None:
    try:
        files = metadata.files("pyspark") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.parts[:2] == ("pyspark", "jars"):
            return Path(str(file.locate())).parent
    return None


def fetch_spark_kafka(folder: Path, version: str, settings_file: Path) -> list[Path]:
    """Spark's Kafka connector jars (only those pyspark/jars lacks) into ``folder``."""
    key = spark_kafka_key(version)
    if not is_fetched(folder, key):
        progress(f"fetching Spark {version} Kafka connector jars via mvn into {folder}…")
        staging = _fresh(folder)
        try:
            run_maven(
                "spark-kafka",
                MAVEN_DIR / "spark-kafka.pom.xml",
                ["dependency:copy-dependencies"],
                {
                    "spark.version": version,
                    "includeArtifactIds": ",".join(SPARK_KAFKA_ARTIFACTS),
                    "outputDirectory": str(staging),
                },
                settings_file,
            )
        except FetchError as exc:
            _discard(staging)
            if f"spark-sql-kafka-0-10_2.13:jar:{version}" in str(exc):
                raise FetchError(
                    "spark-kafka",
                    f"Spark's Kafka connector {version} is not on Maven Central. The connector "
                    f"must match pyspark exactly: pin pyspark to a version whose connector is "
                    f"published ({NEWEST_KNOWN_SPARK_KAFKA} was the newest when infra was "
                    f"written) or set SIGSTREAM_SPARK_KAFKA_VERSION.\n{exc}",
                ) from exc
            raise
        _publish(staging, folder, key)
    jars = sorted(folder.glob("*.jar"))
    clashes = _already_in_pyspark(jars)
    if clashes:
        progress(f"warning: pyspark/jars already has {', '.join(clashes)}; expect duplicates")
    return jars


def _already_in_pyspark(jars: list[Path]) -> list[str]:
    """Artifact names fetched for Spark that pyspark/jars ships too (a class path conflict)."""
    jars_dir = pyspark_jars_dir()
    if jars_dir is None or not jars_dir.is_dir():
        return []
    shipped = {artifact_name(p.name) for p in jars_dir.glob("*.jar")}
    return [p.name for p in jars if artifact_name(p.name) in shipped]


def artifact_name(jar_name: str) -> str:
    """``kafka-clients-3.9.2.jar`` -> ``kafka-clients``: cut before the ``-<major>.<minor>``.

    Not simply at the first ``-<digit>``: ``spark-sql-kafka-0-10_2.13`` has digits in its name.
    """
    stem = jar_name.removesuffix(".jar")
    match = VERSION_PART.search(stem)
    return stem[: match.start()] if match else stem


def fetch_elasticsearch(cache: Path, version: str, settings_file: Path) -> Path:
    """Unpack the integ-test-zip of ``version`` into ``cache/elasticsearch-<version>``."""
    home = cache / f"elasticsearch-{version}"
    key = es_key(version)
    if is_fetched(home, key):
        return home
    progress(f"fetching Elasticsearch {version} via mvn into {cache} (first run only)…")
    download = _fresh(cache / ".download")
    try:
        run_maven(
            "elasticsearch",
            MAVEN_DIR / "elasticsearch.pom.xml",
            ["dependency:copy-dependencies"],
            {
                "elasticsearch.version": version,
                "includeTypes": "zip",
                "outputDirectory": str(download),
            },
            settings_file,
        )
        archive = download / f"elasticsearch-{version}.zip"
        if not archive.is_file():
            raise FetchError("elasticsearch", f"mvn copied no {archive.name} into {download}")
        staging = _fresh(home)
        progress(f"unpacking {archive.name}…")
        try:
            unzip_with_modes(archive, staging, strip_top=f"elasticsearch-{version}/")
        except BaseException:
            _discard(staging)
            raise
        _publish(staging, home, key)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return home


def unzip_with_modes(archive: Path, target: Path, strip_top: str = "") -> None:
    """Extract a zip keeping Unix modes (``zipfile`` drops them, and bin/ must stay +x)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            if strip_top:
                if not name.startswith(strip_top):
                    continue
                name = name[len(strip_top) :]
            if not name:
                continue
            dest = (target / name).resolve()
            if not dest.is_relative_to(target.resolve()):
                raise FetchError("elasticsearch", f"unsafe path in {archive.name}: {info.filename}")
            mode = (info.external_attr >> 16) & 0xFFFF
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(mode):
                os.symlink(zf.read(info).decode(), dest)
                continue
            with zf.open(info) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            if mode & 0o777:
                dest.chmod(mode & 0o777)
