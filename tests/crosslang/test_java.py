"""A Java service and the Python shop: golden files, grpc-java client, kafka-clients consumer.

Generates protobuf-java messages and grpc-java stubs from ``proto/`` with
``buf generate --template buf.gen.java.yaml``, starts
``wirebus run examples.shop.app:app`` on the real Kafka of ``scripts/services``
and runs the JUnit 5 suite of ``tests/crosslang/java`` (``mvn test``) against it.
The ``services`` fixture (Kafka and PostgreSQL) comes from ``tests/crosslang/conftest.py``.
See ``tests/crosslang/java/README.md``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

if shutil.which("java") is None or shutil.which("mvn") is None:
    pytest.skip(
        "the Java cross-language suite needs Java 17 and Maven (java, mvn) on PATH",
        allow_module_level=True,
    )

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JAVA = ROOT / "tests" / "crosslang" / "java"
POM = JAVA / "pom.xml"
CACHE = ROOT / ".cache"
M2 = CACHE / "m2"
BIN = Path(sys.executable).parent  # the venv's bin, where buf is
# this tree's wirebus, its generated code and the examples
PYTHONPATH = os.pathsep.join(str(p) for p in (ROOT / "src", ROOT / "gen" / "python", ROOT))
MVN = ["mvn", "-B", "-q", f"-Dmaven.repo.local={M2}"]
SHOP_GROUP = "shop"  # wirebus run's consumer group: the app's name
GROUP_WAIT = 90  # seconds
# the JUnit classes that must all run, none skipped
JUNIT_CLASSES = ("GoldenFilesTest", "ShopInteropTest")


def pom_property(name: str) -> str:
    match = re.search(rf"<{name}>([^<]+)</{name}>", POM.read_text())
    assert match, f"no <{name}> in {POM}"
    return match[1].strip()


def pom_stamp() -> str:
    return hashlib.sha1(POM.read_bytes()).hexdigest()[:12]


def run(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float, context: str = ""
) -> str:
    """Run ``cmd``; fail the test with its whole output (and ``context``) if it fails."""
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{context}", pytrace=False
        )
    return proc.stdout


def fetch_exe(artifact: str, target: Path, env: dict[str, str]) -> Path:
    """A native executable from Maven Central (``g:a:version:exe:classifier``), cached."""
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            run(
                [
                    *MVN,
                    "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy",
                    f"-Dartifact={artifact}",
                    f"-DoutputDirectory={tmp}",
                ],
                cwd=target.parent,
                env=env,
                timeout=600,
            )
            (downloaded,) = Path(tmp).iterdir()
            downloaded.chmod(0o755)
            downloaded.replace(target)
    return target


def link(name: Path, target: Path) -> None:
    """``name`` -> ``target`` (the unversioned path buf.gen.java.yaml names)."""
    if name.is_symlink() and os.readlink(name) == target.name:
        return
    name.unlink(missing_ok=True)
    name.symlink_to(target.name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            assert proc.poll() is None, f"wirebus run exited {proc.returncode}:\n{log.read_text()}"
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"not SERVING within 60 s:\n{log.read_text()}"
            time.sleep(0.2)


def shop_group_members(bootstrap: str) -> int:
    """How many consumers are in the Kafka group ``shop`` (``wirebus run``'s group) now."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def members() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            responses = await admin.describe_consumer_groups([SHOP_GROUP])
        finally:
            await admin.close()
        # DescribeGroups: (error_code, group_id, state, protocol_type, protocol, members)
        return sum(len(group[5]) for response in responses for group in response.groups)

    return asyncio.run(members())


def wait_shop_group_empty(bootstrap: str) -> None:
    """Another ``wirebus run`` of the shop on this Kafka would share its partitions (so
    whether an order becomes PAID here would be chance): wait for it to stop, bounded."""
    deadline = time.monotonic() + GROUP_WAIT
    while (members := shop_group_members(bootstrap)) > 0:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{members} other consumer(s) stayed in Kafka group {SHOP_GROUP!r} at {bootstrap}"
                f" for {GROUP_WAIT} s: stop the other `wirebus run examples.shop.app:app`",
                pytrace=False,
            )
        time.sleep(2)


@dataclasses.dataclass(frozen=True)
class Shop:
    address: str  # 127.0.0.1:PORT
    log: Path


@pytest.fixture
def shop(services: dict[str, str], tmp_path: Path) -> Iterator[Shop]:
    """``wirebus run examples.shop.app:app`` on Kafka, gRPC health SERVING."""
    wait_shop_group_empty(services["WIREBUS_KAFKA_BOOTSTRAP"])
    port = free_port()
    log = tmp_path / "shop.log"
    env = {
        **os.environ,
        "PYTHONPATH": PYTHONPATH,
        "WIREBUS_KAFKA_BOOTSTRAP": services["WIREBUS_KAFKA_BOOTSTRAP"],
        "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/inbox.db",
    }
    cmd = [sys.executable, "-m", "wirebus", "run", "examples.shop.app:app", "--port", str(port)]
    with log.open("wb") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
    try:
        wait_serving(port, proc, log)
        yield Shop(f"127.0.0.1:{port}", log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, f"wirebus run exited {proc.returncode}:\n{log.read_text()}"


def junit_counts() -> dict[str, dict[str, int]]:
    """Per JUnit class: tests, failures, errors, skipped, from surefire's XML reports."""
    counts = {}
    for report in (JAVA / "target" / "surefire-reports").glob("TEST-*.xml"):
        suite = ET.parse(report).getroot()
        counts[suite.get("name", "").rsplit(".", 1)[-1]] = {
            key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")
        }
    return counts


def test_java_reads_golden_files_calls_the_gateway_and_consumes_the_events(
    services: dict[str, str],
    shop: Shop,
) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    # protoc (java builtin) and protoc-gen-grpc-java, the versions the pom depends on
    protobuf, grpc_java = pom_property("protobuf.version"), pom_property("grpc.version")
    protoc = fetch_exe(
        f"com.google.protobuf:protoc:{protobuf}:exe:linux-x86_64",
        CACHE / "protoc" / f"protoc-{protobuf}",
        env,
    )
    link(CACHE / "protoc" / "protoc", protoc)
    plugin = fetch_exe(
        f"io.grpc:protoc-gen-grpc-java:{grpc_java}:exe:linux-x86_64",
        CACHE / "grpc-java" / f"protoc-gen-grpc-java-{grpc_java}",
        env,
    )
    link(CACHE / "grpc-java" / "protoc-gen-grpc-java", plugin)
    run([str(BIN / "buf"), "generate", "--template", "buf.gen.java.yaml"], cwd=ROOT, env=env,
        timeout=300)  # fmt: skip

    # offline once this pom's dependencies and plugins are all in the local repository
    stamp = M2 / f".wirebus-crosslang-{pom_stamp()}"
    offline = ["-o"] if stamp.exists() else []
    shutil.rmtree(JAVA / "target" / "surefire-reports", ignore_errors=True)
    java_env = {
        **env,
        "WIREBUS_GATEWAY": shop.address,
        "WIREBUS_KAFKA_BOOTSTRAP": services["WIREBUS_KAFKA_BOOTSTRAP"],
        "WIREBUS_GOLDEN_DIR": str(ROOT / "tests" / "golden"),
    }
    output = run(
        [*MVN, *offline, "test"],
        cwd=JAVA,
        env=java_env,
        timeout=900,
        context=f"\n--- wirebus run log ---\n{shop.log.read_text(errors='replace')[-20000:]}",
    )
    stamp.touch()

    counts = junit_counts()
    for name in JUNIT_CLASSES:
        assert name in counts, f"JUnit class {name} did not run: {counts}\n{output}"
        assert counts[name]["tests"] > 0, f"{name} ran no test: {counts}\n{output}"
        assert counts[name]["skipped"] == 0, f"{name} skipped tests: {counts}\n{output}"
    assert counts["ShopInteropTest"]["tests"] == 4, counts
    print(f"JUnit: {counts}")
