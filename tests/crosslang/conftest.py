"""What the cross-language drivers share: the shop server and running toolchain commands.

- ``services`` (the real Kafka and PostgreSQL of ``scripts/services``) is re-exported
  from ``tests/integration/conftest.py``;
- ``shop_server(group)`` runs ``python -m wirebus run examples.shop.app:app --port P
  --group G`` on that Kafka with a SQLite database of its own, waits for gRPC health
  SERVING and, on exit, stops it with SIGTERM and asserts exit code 0;
  ``shop_server(group, kafka=False, args=[...], env={...})`` runs one on the embedded
  in-memory broker instead (nothing outside the process can answer its messages),
  with more command-line arguments (``--slice``) and environment (``SHOP_*``);
- ``run_tool`` runs a toolchain command and fails the test with its output (and the
  end of the shop's log) unless it exits 0; ``tool_env`` builds its environment;
- ``seeded_backlog(name)`` writes a backlog of other orders' events and an
  out-of-order arrival on two fresh topics (``tests/crosslang/backlog.py``): each
  language's consumer must wait through it for the wanted event types of one order.

Each language consumes as a group of its own (``shop-crosslang-<lang>``): any other
``wirebus run`` of the shop in the same group on this Kafka would be handed some of
the partitions, each process with its own order store, and the PaymentCaptured that
marks an order PAID could go to the other one. So ``shop_server`` first waits
(bounded) for its group to be empty. Then it moves the group's committed offsets
to the ends of the shop's topics: other tests on this Kafka publish thousands of
events between two runs, and working through that backlog (each OrderPlaced paid
again) would take the shop longer than the languages wait for their order to be
PAID. Each run handles only the events of its own orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.checkout import PYTHONPATH, ROOT
from tests.crosslang.backlog import Backlog, seed_backlog
from tests.integration.conftest import services  # noqa: F401  (session fixture, re-exported)

VENV_BIN = Path(sys.executable).parent  # the venv's bin, where buf is
GOLDEN = ROOT / "tests" / "golden"
SHOP_APP = "examples.shop.app:app"
SHOP_TOPICS = ("shop.orders.v1", "shop.payments.v1")  # what the shop consumes
SERVING_WITHIN = 60.0  # seconds
GROUP_EMPTY_WITHIN = 90.0  # seconds
LOG_TAIL_LINES = 100


@dataclasses.dataclass(frozen=True)
class ShopServer:
    """A running ``wirebus run`` of the shop."""

    port: int
    log: Path  # its stdout and stderr
    reader_group: str
    """A consumer group whose offsets are the shop topics' ends when the server started:
    a language's consumer in it reads only what this run published (a long-lived broker
    holds millions of older records, more than a slow client reads in its time); empty
    when the topics did not exist yet (then there is nothing older to skip)."""
    connect_port: int = 0
    """The shop's Connect and gRPC-Web port (``--connect-port``)."""
    database: Path | None = None
    """The shop's SQLite database file (its orders, stock and sagas)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of the server's log, to show next to a failure."""
        if not self.log.is_file():
            return ""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join([f"\n--- last lines of {self.log}", *text])


class ShopServerFactory(Protocol):
    """The type of the ``shop_server`` fixture: ``with shop_server(group) as server: ...``"""

    def __call__(
        self,
        group: str,
        *,
        kafka: bool = True,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> AbstractContextManager[ShopServer]: ...


#: the type of the ``seeded_backlog`` fixture: ``seeded_backlog("crosslang-go").env()``
BacklogFactory = Callable[[str], Backlog]


def tool_env(*path: Path, **extra: str) -> dict[str, str]:
    """``os.environ`` with the venv's bin and then ``path`` in front of PATH, plus ``extra``."""
    dirs = [str(VENV_BIN), *map(str, path), os.environ.get("PATH", "")]
    return {**os.environ, "PATH": os.pathsep.join(dirs), **extra}


def run_tool(
    args: list[str],
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float,
    shop: ShopServer | None = None,
    merge_stderr: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``args``; fail the test with its whole output (and the end of the shop's log)
    if it times out or, with ``check``, exits non-zero. ``merge_stderr`` sends stderr to
    stdout, interleaved."""
    command = " ".join(args)
    context = shop.log_tail() if shop is not None else ""
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=env if env is not None else tool_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output
        pytest.fail(f"{command} timed out after {timeout:g} s:\n{out or ''}{context}", False)
    if check and done.returncode != 0:
        streams = done.stdout if merge_stderr else f"{done.stdout}\n--- stderr:\n{done.stderr}"
        pytest.fail(f"{command} exited {done.returncode}:\n{streams}{context}", pytrace=False)
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_members(bootstrap: str, group: str) -> int:
    """How many consumers are in the Kafka consumer group ``group`` now."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def members() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            responses = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        # DescribeGroups: (error_code, group_id, state, protocol_type, protocol, members)
        return sum(len(found[5]) for response in responses for found in response.groups)

    return asyncio.run(_patiently(members))


def _patiently(step: Any, within: float = 60.0) -> Any:
    """Run ``step()`` again while a fresh broker's group coordinator is still starting."""
    from aiokafka.errors import KafkaError

    async def attempt() -> Any:
        deadline = time.monotonic() + within
        while True:
            try:
                return await step()
            except KafkaError as exc:  # GroupCoordinatorNotAvailable on a brand-new broker
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)

    return attempt()


def skip_backlog(bootstrap: str, group: str) -> bool:
    """Commit the ends of the shop's topics as the (empty) group's offsets.

    False when the topics do not exist yet (a fresh Kafka): nothing to skip.

    The partitions come from a producer's metadata (``partitions_for``): a
    consumer's ``partitions_for_topic`` knows only the topics it subscribed
    to, so asking it found none and skipped nothing (the shop then worked
    through every event other runs had left on its topics).
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def commit_ends() -> bool:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            existing = await consumer.topics()  # asking a producer would create the rest
            topics = [topic for topic in SHOP_TOPICS if topic in existing]
            if not topics:  # a fresh Kafka: no backlog either
                return False
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
            await producer.start()
            try:
                partitions = [
                    TopicPartition(topic, partition)
                    for topic in topics
                    for partition in sorted(await producer.partitions_for(topic))
                ]
            finally:
                await producer.stop()
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await consumer.commit(ends)
            for tp, end in ends.items():  # the group's offsets are the ends now
                assert await consumer.committed(tp) == end, (tp, end)
            return True
        finally:
            await consumer.stop()

    return asyncio.run(_patiently(commit_ends))


def wait_group_empty(bootstrap: str, group: str) -> None:
    deadline = time.monotonic() + GROUP_EMPTY_WITHIN
    while (members := group_members(bootstrap, group)) > 0:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{members} other consumer(s) stayed in Kafka group {group!r} at {bootstrap}"
                f" for {GROUP_EMPTY_WITHIN:g} s: stop the other `wirebus run {SHOP_APP}`",
                pytrace=False,
            )
        time.sleep(2)


def wait_serving(
    server: ShopServer,
    proc: subprocess.Popen[bytes],
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Wait until the gateway's gRPC health check answers SERVING (over TLS with
    ``credentials``), bounded; fail with the server's log if it exits or never does."""
    deadline = time.monotonic() + SERVING_WITHIN
    channel = (
        grpc.insecure_channel(server.address)
        if credentials is None
        else grpc.secure_channel(server.address, credentials)
    )
    over = "" if credentials is None else " over TLS"
    with channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited early ({proc.returncode}):{server.log_tail()}")
            with contextlib.suppress(grpc.RpcError):
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"not SERVING{over} within {SERVING_WITHIN:g} s:{server.log_tail()}")
            time.sleep(0.1)


@contextlib.contextmanager
def run_shop(
    group: str,
    bootstrap: str | None,
    workdir: Path,
    args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[ShopServer]:
    """``wirebus run examples.shop.app:app --group GROUP ARGS`` on Kafka (on the embedded
    in-memory broker when ``bootstrap`` is None), database in ``workdir``."""
    reader_group = ""
    if bootstrap is not None:
        wait_group_empty(bootstrap, group)
        skip_backlog(bootstrap, group)
        reader_group = f"{group}-reader-{uuid.uuid4().hex[:8]}"
        if not skip_backlog(bootstrap, reader_group):
            reader_group = ""  # no topics yet: nothing to skip, read from the beginning
    server = ShopServer(
        port=free_port(),
        log=workdir / "shop.log",
        reader_group=reader_group,
        connect_port=free_port(),
        database=workdir / "shop.db",
    )
    # this tree's wirebus, its generated code and the examples (tests/checkout.py)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([PYTHONPATH, os.environ.get("PYTHONPATH", "")]),
        "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{server.database}",
        **(extra_env or {}),
    }
    env.pop("WIREBUS_KAFKA_BOOTSTRAP", None)  # the services' env may hold it
    if bootstrap is not None:
        env["WIREBUS_KAFKA_BOOTSTRAP"] = bootstrap
    command = [sys.executable, "-m", "wirebus", "run", SHOP_APP]
    connect = ["--connect-port", str(server.connect_port)]  # Connect clients call it too
    with server.log.open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [*command, "--port", str(server.port), "--group", group, *connect, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        wait_serving(server, proc)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
    assert code == 0, f"wirebus run exited {code} on SIGTERM:{server.log_tail()}"


@pytest.fixture(scope="session")
def shop_server(
    services: dict[str, str],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> ShopServerFactory:
    """``shop_server(group)``: a context manager running the shop (see ``run_shop``)."""
    bootstrap = services["WIREBUS_KAFKA_BOOTSTRAP"]

    def start(
        group: str,
        *,
        kafka: bool = True,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> AbstractContextManager[ShopServer]:
        workdir = tmp_path_factory.mktemp(group)
        return run_shop(group, bootstrap if kafka else None, workdir, args, env)

    return start


@pytest.fixture(scope="session")
def kafka_bootstrap(services: dict[str, str]) -> str:  # noqa: F811
    return services["WIREBUS_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def seeded_backlog(kafka_bootstrap: str) -> BacklogFactory:
    """``seeded_backlog(name)``: fresh topics holding a backlog (see ``backlog.py``)."""

    def seed(name: str) -> Backlog:
        return seed_backlog(kafka_bootstrap, name)

    return seed
