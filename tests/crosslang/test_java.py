"""A Java service and the Python shop: golden files, grpc-java client, kafka-clients consumer.

Generates protobuf-java messages and grpc-java stubs from ``proto/`` with
``buf generate --template buf.gen.java.yaml``, starts
``wirebus run examples.shop.app:app --group shop-crosslang-java`` on the real Kafka of
``scripts/services`` (``shop_server`` in conftest.py) and runs the JUnit 5 suite of
``tests/crosslang/java`` (``mvn test``) against it.
See ``tests/crosslang/java/README.md``.
"""

from __future__ import annotations

import hashlib
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crosslang.conftest import (
    GOLDEN,
    ROOT,
    BacklogFactory,
    ShopServer,
    ShopServerFactory,
    run_tool,
    tool_env,
)
from tests.crosslang.tls import PKI, serve_with_tls

if shutil.which("java") is None or shutil.which("mvn") is None:
    pytest.skip(
        "the Java cross-language suite needs Java 17 and Maven (java, mvn) on PATH",
        allow_module_level=True,
    )

pytestmark = pytest.mark.integration

JAVA = ROOT / "tests" / "crosslang" / "java"
POM = JAVA / "pom.xml"
CACHE = ROOT / ".cache"
M2 = CACHE / "m2"
MVN = ["mvn", "-B", "-q", f"-Dmaven.repo.local={M2}"]
# the JUnit classes that must all run, none skipped
JUNIT_CLASSES = ("GoldenFilesTest", "ShopInteropTest", "BacklogConsumerTest")
TLS_CLASS = "GatewayTlsTest"  # grpc-java over mutual TLS, against `wirebus serve --tls-cert ...`


def pom_stamp() -> str:
    return hashlib.sha1(POM.read_bytes()).hexdigest()[:12]


@pytest.fixture
def shop(shop_server: ShopServerFactory) -> Iterator[ShopServer]:
    with shop_server("shop-crosslang-java") as server:
        yield server


def junit_counts() -> dict[str, dict[str, int]]:
    """Per JUnit class: tests, failures, errors, skipped, from surefire's XML reports."""
    counts = {}
    for report in (JAVA / "target" / "surefire-reports").glob("TEST-*.xml"):
        suite = ET.parse(report).getroot()
        counts[suite.get("name", "").rsplit(".", 1)[-1]] = {
            key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")
        }
    return counts


def generate_java() -> None:
    """protoc (java builtin) and protoc-gen-grpc-java, the versions the pom depends on
    (``scripts/java-plugins``, as the README shows), then ``buf generate`` into the pom's
    generated sources."""
    run_tool([str(ROOT / "scripts" / "java-plugins")], timeout=900, merge_stderr=True)
    buf = ["buf", "generate", "--template", "buf.gen.java.yaml"]
    run_tool(buf, timeout=300, merge_stderr=True)


def mvn_test(env: dict[str, str], *args: str, shop: ShopServer) -> str:
    """``mvn test ARGS`` (offline once this pom's dependencies are all local); its output."""
    stamp = M2 / f".wirebus-crosslang-{pom_stamp()}"
    offline = ["-o"] if stamp.exists() else []
    shutil.rmtree(JAVA / "target" / "surefire-reports", ignore_errors=True)
    command = [*MVN, *offline, "test", *args]
    done = run_tool(command, cwd=JAVA, env=env, timeout=900, shop=shop, merge_stderr=True)
    stamp.touch()
    return done.stdout


def test_java_reads_golden_files_calls_the_gateway_and_consumes_the_events(
    shop: ShopServer, kafka_bootstrap: str, seeded_backlog: BacklogFactory
) -> None:
    generate_java()
    java_env = tool_env(
        WIREBUS_GATEWAY=shop.address,
        WIREBUS_KAFKA_BOOTSTRAP=kafka_bootstrap,
        WIREBUS_GOLDEN_DIR=str(GOLDEN),
        **seeded_backlog("crosslang-java").env(),
    )
    # GatewayTlsTest runs alone, on a TLS server of its own (the test below)
    output = mvn_test(java_env, f"-Dtest=!{TLS_CLASS}", shop=shop)

    counts = junit_counts()
    for name in JUNIT_CLASSES:
        assert name in counts, f"JUnit class {name} did not run: {counts}\n{output}"
        assert counts[name]["tests"] > 0, f"{name} ran no test: {counts}\n{output}"
        assert counts[name]["skipped"] == 0, f"{name} skipped tests: {counts}\n{output}"
    assert counts["ShopInteropTest"]["tests"] == 4, counts
    assert counts["BacklogConsumerTest"]["tests"] == 1, counts
    print(f"JUnit: {counts}")


def test_java_client_calls_the_gateway_over_mutual_tls(tmp_path: Path) -> None:
    """grpc-java with ``TlsChannelCredentials``: with the client certificate it places an order
    and reads it back; without one it is refused (UNAVAILABLE). See ``GatewayTlsTest.java``."""
    generate_java()
    pki = PKI.make(tmp_path)
    with serve_with_tls(pki, tmp_path) as server:
        output = mvn_test(tool_env(**pki.env(server)), f"-Dtest={TLS_CLASS}", shop=server)
    counts = junit_counts()
    assert counts.get(TLS_CLASS) == {"tests": 2, "failures": 0, "errors": 0, "skipped": 0}, (
        f"{counts}\n{output}"
    )
