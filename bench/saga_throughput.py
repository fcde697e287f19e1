"""Sagas completed per second on PostgreSQL, and the commits each costs: wirebus vs python-cqrs.

Every row runs the same saga -- 3 in-process steps, each an action that
inserts one row into an app table ``bench_step`` (key, step) and a
compensation that would mark it undone -- ``--sagas N`` times with
``--concurrency C`` sagas in flight, on a fresh database of the PostgreSQL
server in ``WIREBUS_DATABASE_URL`` (or ``--url``), through one SQLAlchemy
async engine per row (asyncpg, pool of C connections + SQLAlchemy's default
overflow of 10: what wirebus' ``Database(pool_size=C)`` builds).

  cqrs_shipped  python-cqrs 5.3 ``cqrs.bootstrap.saga.bootstrap`` +
                ``SqlAlchemySagaStorage`` (its own ``saga_executions`` /
                ``saga_logs`` tables), ``mediator.execute(context)``; the
                ``cqrs`` logger at the DEBUG level python-cqrs sets on import
  cqrs_quiet    the same with ``logging.getLogger("cqrs").setLevel(WARNING)``
                (the baseline of the ratios)
  wirebus       ``App(sagas=[...])`` on a ``Database``: the saga started by
                its ``start_on`` event through ``mediator.publish``, each
                step sending ``WriteStep`` through the mediator (its handler
                joins the step's unit of work); the SQLAlchemy saga store
                (skipped, saying why, on a branch without wirebus.saga.engine)

Each step's write is the app's own: python-cqrs steps get no session from the
saga (its storage keeps its session to itself), so each action writes in its
own transaction; wirebus steps write through the call's unit of work.

For every row: sagas/s over the timed window, p50/p99 latency of one saga,
and per saga exactly: transactions begun, commits, rollbacks (SQLAlchemy
``begin``/``commit``/``rollback`` events on ``engine.sync_engine``) and SQL
statements (``before_cursor_execute``), plus the log records that reached
the root handler (a counting handler that discards them: nothing is
printed), and this process's CPU per saga. A warm-up of max(C, 64) sagas
runs first, untimed and uncounted. After the row, queries check that every
saga completed and ``bench_step`` holds exactly 3 rows per saga -- a row that
is fast because it skipped work fails (and the script exits 1).

Run (~15-35 s per row per round on the shared 2-core machine)::

    eval "$(scripts/services env)"; export WIREBUS_KEEP_SERVICES=1
    PYTHONPATH=src:gen/python:. .venv/bin/python bench/saga_throughput.py \\
        --sagas 1000 --rounds 3 --json sagas.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import logging
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa
from _common import percentile, print_table, write_json
from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import wirebus
from wirebus import Mediator

DB_ENV = "WIREBUS_DATABASE_URL"
STEPS = 3
WARMUP = 64
"""Untimed, uncounted sagas run first in every row (at least C)."""
ROWS = ("cqrs_shipped", "cqrs_quiet", "wirebus")
BASELINE = "cqrs_quiet"
LABELS = {
    "cqrs_shipped": "python-cqrs saga + SqlAlchemySagaStorage, 'cqrs' logger DEBUG (as shipped)",
    "cqrs_quiet": "python-cqrs saga + SqlAlchemySagaStorage, 'cqrs' logger WARNING",
    "wirebus": "wirebus saga engine + SQLAlchemy saga store (unit of work)",
}

app_metadata = sa.MetaData()
bench_step = sa.Table(
    "bench_step",
    app_metadata,
    sa.Column("saga_key", sa.String(40), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(10), nullable=False),
)
INSERT_STEP = sa.insert(bench_step)
UNDO_STEP = (
    sa.update(bench_step)
    .where(bench_step.c.saga_key == sa.bindparam("k"), bench_step.c.step == sa.bindparam("s"))
    .values(state="undone")
)


# ---------------------------------------------------------------- counting


class Counts:
    """Transactions, statements and log records seen since the last :meth:`reset`."""

    FIELDS = ("begins", "commits", "rollbacks", "statements", "log_records")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        for name in self.FIELDS:
            setattr(self, name, 0)

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.FIELDS}


def count_engine(engine: AsyncEngine, counts: Counts) -> None:
    """Count every transaction and statement of ``engine`` into ``counts``."""

    def on_begin(conn: Any) -> None:
        counts.begins += 1  # type: ignore[attr-defined]

    def on_commit(conn: Any) -> None:
        counts.commits += 1  # type: ignore[attr-defined]

    def on_rollback(conn: Any) -> None:
        counts.rollbacks += 1  # type: ignore[attr-defined]

    def on_statement(*args: Any) -> None:
        counts.statements += 1  # type: ignore[attr-defined]

    sync = engine.sync_engine
    event.listen(sync, "begin", on_begin)
    event.listen(sync, "commit", on_commit)
    event.listen(sync, "rollback", on_rollback)
    event.listen(sync, "before_cursor_execute", on_statement)


class CountingDiscardHandler(logging.Handler):
    """A root handler that counts the records reaching it and drops them."""

    def __init__(self, counts: Counts) -> None:
        super().__init__(logging.NOTSET)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        self.counts.log_records += 1  # type: ignore[attr-defined]


# ---------------------------------------------------------------- subjects


class Subject(Protocol):
    """One library's saga on one fresh database, through its own engine."""

    engine: AsyncEngine

    async def setup(self) -> None: ...

    async def close(self) -> None: ...

    async def run_saga(self, key: str) -> None: ...

    async def completed(self) -> int: ...


class CqrsSubject:
    """python-cqrs 5.3: ``SagaMediator.execute`` with ``SqlAlchemySagaStorage``."""

    def __init__(self, url: str, concurrency: int) -> None:
        import di
        from cqrs.bootstrap import saga as saga_bootstrap
        from cqrs.saga.storage.sqlalchemy import SqlAlchemySagaStorage

        # the pool of wirebus' Database: pool_size, SQLAlchemy's default max_overflow (10)
        self.engine = create_async_engine(url, pool_size=concurrency)
        sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.context_type, saga_type = _cqrs_saga(sessions)
        self.mediator = saga_bootstrap.bootstrap(
            di_container=di.Container(),
            sagas_mapper=lambda m: m.bind(self.context_type, saga_type),
            saga_storage=SqlAlchemySagaStorage(sessions),
        )

    async def setup(self) -> None:
        from cqrs.saga.storage.sqlalchemy import Base

        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def run_saga(self, key: str) -> None:
        context = self.context_type(key=key)
        async for _ in self.mediator.execute(context):
            pass
        if context.steps_done != STEPS:
            raise AssertionError(f"python-cqrs saga {key} ran {context.steps_done} steps")

    async def completed(self) -> int:
        from cqrs.saga.storage.enums import SagaStatus
        from cqrs.saga.storage.sqlalchemy import SagaExecutionModel as Execution

        query = sa.select(sa.func.count()).where(Execution.status == SagaStatus.COMPLETED)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def close(self) -> None:
        await self.engine.dispose()


def _cqrs_saga(sessions: async_sessionmaker[Any]) -> tuple[Any, Any]:
    """The context and saga classes of the python-cqrs row (3 steps writing ``bench_step``)."""
    import cqrs
    from cqrs.saga.models import SagaContext

    @dataclasses.dataclass
    class BenchContext(SagaContext):
        key: str
        steps_done: int = 0

    def step(index: int) -> type[Any]:
        class Step(cqrs.SagaStepHandler[BenchContext, None]):
            async def act(self, context: BenchContext) -> Any:
                async with sessions() as session:
                    await session.execute(
                        INSERT_STEP, {"saga_key": context.key, "step": index, "state": "done"}
                    )
                    await session.commit()
                context.steps_done += 1
                return self._generate_step_result(None)

            async def compensate(self, context: BenchContext) -> None:
                async with sessions() as session:
                    await session.execute(UNDO_STEP, {"k": context.key, "s": index})
                    await session.commit()

        Step.__name__ = Step.__qualname__ = f"Step{index}"  # python-cqrs logs steps by class name
        return Step

    class BenchSaga(cqrs.Saga[BenchContext]):
        steps = [step(i) for i in range(STEPS)]  # noqa: RUF012 (python-cqrs' declaration)

    return BenchContext, BenchSaga


# wirebus' messages and handlers: module level, so their annotations resolve.


class BenchSagaRequested(wirebus.Event):
    """Starts one bench saga (its ``start_on`` event; handled in-process)."""

    key: str


class WriteStep(wirebus.Command[None]):
    key: str
    step: int


class UndoStep(wirebus.Command[None]):
    key: str
    step: int


@dataclasses.dataclass
class BenchData:
    key: str
    steps_done: int = 0


bench_router = wirebus.Router("bench")


@bench_router.handler
async def write_step(cmd: WriteStep, session: AsyncSession) -> None:
    await session.execute(INSERT_STEP, {"saga_key": cmd.key, "step": cmd.step, "state": "done"})


@bench_router.handler
async def undo_step(cmd: UndoStep, session: AsyncSession) -> None:
    await session.execute(UNDO_STEP, {"k": cmd.key, "s": cmd.step})


def _wirebus_saga() -> Any:
    """The wirebus saga of the row: 3 in-process steps, each sending WriteStep/UndoStep."""
    from wirebus.saga import Saga, Step

    def step(index: int) -> Any:
        async def act(data: BenchData, mediator: Mediator) -> None:
            await mediator.send(WriteStep(key=data.key, step=index))
            data.steps_done += 1

        async def undo(data: BenchData, mediator: Mediator) -> None:
            await mediator.send(UndoStep(key=data.key, step=index))

        return Step(f"step {index}", action=act, compensate=undo)

    return Saga(
        "bench",
        data=BenchData,
        key="key",
        start_on=[BenchSagaRequested],
        steps=[step(i) for i in range(STEPS)],
    )


class WirebusSubject:
    """wirebus: ``App(sagas=[...])`` on a ``Database``; each transition one unit of work."""

    def __init__(self, url: str, concurrency: int) -> None:
        from wirebus.db import Database

        self.database = Database(
            url, schema="create", extra_metadata=[app_metadata], pool_size=concurrency
        )
        self.engine = self.database.engine
        self.app = wirebus.App(name="bench", routers=[bench_router], sagas=[_wirebus_saga()])
        self.mediator: Mediator | None = None

    async def setup(self) -> None:
        await self.database.start()
        self.mediator = self.app.mediator(database=self.database, owns_database=False)
        await self.mediator.start()

    async def run_saga(self, key: str) -> None:
        assert self.mediator is not None
        # the in-process Due handler drives the saga to its end before publish returns
        await self.mediator.publish(BenchSagaRequested(key=key))

    async def completed(self) -> int:
        from wirebus.db import saga_table

        query = sa.select(sa.func.count()).where(
            saga_table.c.saga_type == "bench", saga_table.c.status == "completed"
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def close(self) -> None:
        if self.mediator is not None:
            await self.mediator.close()
        await self.database.close()


# ---------------------------------------------------------------- one row


async def drive(
    run: Callable[[str], Awaitable[None]], keys: Sequence[str], concurrency: int
) -> list[float]:
    """Run ``run(key)`` for every key, ``concurrency`` at a time; the latency of each."""
    latencies: list[float] = []
    pending = iter(keys)

    async def worker() -> None:
        for key in pending:
            t0 = time.perf_counter()
            await run(key)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(keys)))))
    return latencies


async def verify(engine: AsyncEngine, subject: Subject, sagas: int) -> dict[str, Any]:
    """What the database holds after the row: completed sagas and ``bench_step`` rows."""
    per_key = sa.select(bench_step.c.saga_key).group_by(bench_step.c.saga_key)
    async with engine.connect() as conn:
        rows = int(
            (await conn.execute(sa.select(sa.func.count()).select_from(bench_step))).scalar()
        )
        keys = int(
            (
                await conn.execute(sa.select(sa.func.count()).select_from(per_key.subquery()))
            ).scalar()
        )
        odd = (
            (await conn.execute(per_key.having(sa.func.count() != STEPS).limit(3))).scalars().all()
        )
        undone = int(
            (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(bench_step)
                    .where(bench_step.c.state != "done")
                )
            ).scalar()
        )
    completed = await subject.completed()
    problems = []
    if completed != sagas:
        problems.append(f"{completed} sagas completed, expected {sagas}")
    if rows != STEPS * sagas or keys != sagas or odd or undone:
        problems.append(
            f"bench_step: {rows} rows over {keys} sagas (expected {STEPS} x {sagas}), odd keys {list(odd)}, {undone} undone"
        )
    return {
        "completed": completed,
        "step_rows": rows,
        "verified": not problems,
        "problems": problems,
    }


def subject_of(name: str, url: str, concurrency: int) -> Subject:
    """The subject of row ``name``; ``NotImplementedError`` saying what is missing."""
    if name != "wirebus":
        return CqrsSubject(url, concurrency)
    if importlib.util.find_spec("wirebus.saga.engine") is None:
        raise NotImplementedError("wirebus.saga.engine is not on this branch (wt/saga)")
    return WirebusSubject(url, concurrency)


async def timed_run(
    subject: Subject, counts: Counts, sagas: int, concurrency: int, limit_s: float, warm: int
) -> dict[str, Any]:
    """``warm`` sagas (not timed nor counted), then ``sagas`` sagas timed and counted."""
    await subject.setup()
    async with subject.engine.begin() as conn:
        await conn.run_sync(app_metadata.create_all)
    await drive(subject.run_saga, [f"warm-{i:05d}" for i in range(warm)], concurrency)
    count_engine(subject.engine, counts)
    counts.reset()
    keys = [f"saga-{i:07d}" for i in range(sagas)]
    c0, t0 = time.process_time(), time.perf_counter()
    latencies = await asyncio.wait_for(drive(subject.run_saga, keys, concurrency), limit_s)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    seen = counts.snapshot()
    latencies.sort()
    return {
        "sagas_per_s": sagas / wall,
        "seconds": wall,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "cpu_ms_per_saga": cpu / sagas * 1e3,
        **{f"{k}_per_saga": v / sagas for k, v in seen.items()},
    }


async def measure_row(
    name: str, url: str, sagas: int, concurrency: int, limit_s: float
) -> dict[str, Any]:
    """One row on its own fresh database: warm-up, timed run, counts, verification."""
    from wirebus.testing import postgres_database

    row: dict[str, Any] = {"key": name, "label": LABELS[name], "sagas": sagas}
    warm = max(WARMUP, concurrency)
    row.update(concurrency=concurrency, warmup=warm)
    cqrs_logger, root = logging.getLogger("cqrs"), logging.getLogger()
    async with postgres_database(url, "bench_saga") as db_url:
        try:
            subject = subject_of(name, db_url, concurrency)
        except NotImplementedError as exc:
            return {**row, "skipped": str(exc)}
        counts = Counts()
        handler = CountingDiscardHandler(counts)
        shipped = cqrs_logger.level  # what importing cqrs set it to (DEBUG)
        if name == "cqrs_quiet":
            cqrs_logger.setLevel(logging.WARNING)
        root.addHandler(handler)
        try:
            row.update(await timed_run(subject, counts, sagas, concurrency, limit_s, warm))
        finally:
            root.removeHandler(handler)
            cqrs_logger.setLevel(shipped)
        try:
            row.update(await verify(subject.engine, subject, sagas + warm))
        finally:
            await subject.close()
    return row


# ---------------------------------------------------------------- rounds and report


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of a row's rounds (its counts are exact, so the same in every round)."""
    done = [r for r in runs if "sagas_per_s" in r]
    if not done:
        return runs[0]
    rates = sorted(r["sagas_per_s"] for r in done)
    best = sorted(done, key=lambda r: r["sagas_per_s"])[len(done) // 2]
    return {
        **best,
        "sagas_per_s": statistics.median(rates),
        "sagas_per_s_min": rates[0],
        "sagas_per_s_max": rates[-1],
        "cpu_ms_per_saga": statistics.median(r["cpu_ms_per_saga"] for r in done),
        "p50_ms": statistics.median(r["p50_ms"] for r in done),
        "p99_ms": statistics.median(r["p99_ms"] for r in done),
        "rounds": len(done),
        "by_round": {k: [r[k] for r in done] for k in ("sagas_per_s", "cpu_ms_per_saga")},
        "verified": all(r["verified"] for r in done),
        "problems": [p for r in done for p in r["problems"]],
    }


RATIO_METRICS = (
    ("sagas_per_s", "sagas/s"),
    ("cpu_ms_per_saga", "CPU ms per saga"),
    ("commits_per_saga", "commits per saga"),
    ("statements_per_saga", "statements per saga"),
)


def ratios(by: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """wirebus over python-cqrs quiet (the baseline) and as shipped; shipped over quiet."""
    pairs = [("wirebus", BASELINE), ("wirebus", "cqrs_shipped"), ("cqrs_shipped", BASELINE)]
    out: list[list[Any]] = []
    for top, base in pairs:
        t, b = by.get(top, {}), by.get(base, {})
        if "sagas_per_s" in t and "sagas_per_s" in b:
            out += [
                [f"{top} / {base}: {what}", t[k] / b[k], _round_spread(t, b, k)]
                for k, what in RATIO_METRICS
            ]
    return out


def _round_spread(top: dict[str, Any], base: dict[str, Any], key: str) -> str:
    """min-max of the ratio taken within each round (both rows ran in that round)."""
    if key not in top.get("by_round", {}):
        return "-"
    pairs = zip(top["by_round"][key], base["by_round"][key], strict=False)
    each = sorted(t / b for t, b in pairs)
    return f"{each[0]:.2f}-{each[-1]:.2f}"


def report(
    rows: list[dict[str, Any]], sagas: int, concurrency: int, rounds: int
) -> list[list[Any]]:
    table = []
    for r in rows:
        if "skipped" in r:
            table.append([r["key"], f"skipped: {r['skipped']}", *["-"] * 10])
            continue
        table.append(
            [
                r["key"],
                r["sagas_per_s"],
                f"{r['sagas_per_s_min']:.0f}-{r['sagas_per_s_max']:.0f}",
                r["p50_ms"],
                r["p99_ms"],
                r["commits_per_saga"],
                r["begins_per_saga"],
                r["rollbacks_per_saga"],
                r["statements_per_saga"],
                r["log_records_per_saga"],
                r["cpu_ms_per_saga"],
                "yes" if r["verified"] else "NO: " + "; ".join(r["problems"]),
            ]
        )
    print_table(
        f"saga_throughput: {sagas} sagas x {STEPS} steps, {concurrency} in flight, median of {rounds} round(s)",
        [
            "row",
            "sagas/s",
            "spread",
            "p50 ms",
            "p99 ms",
            "commits/saga",
            "begins/saga",
            "rollbacks/saga",
            "statements/saga",
            "log records/saga",
            "CPU ms/saga",
            "verified",
        ],
        table,
    )
    by = {r["key"]: r for r in rows}
    measured = ratios(by)
    if measured:
        print_table(
            "saga_throughput: ratios (baseline python-cqrs, logger WARNING)",
            ["measure", "value", "per round"],
            measured,
        )
    return measured


async def measure(args: argparse.Namespace, names: list[str]) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for round_no in range(args.rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            r = await measure_row(name, args.url, args.sagas, args.concurrency, args.timeout)
            runs[name].append(r)
            rate = f"{r['sagas_per_s']:.1f} sagas/s" if "sagas_per_s" in r else r.get("skipped", "")
            print(f"  round {round_no + 1} {name:13} {rate}", file=sys.stderr, flush=True)
    return [summarize(runs[n]) for n in names]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--url",
        default=os.environ.get(DB_ENV, ""),
        help=f"postgresql+asyncpg URL (default ${DB_ENV})",
    )
    ap.add_argument(
        "--sagas", type=int, default=1000, help="sagas per row (timed; after C warm-up sagas)"
    )
    ap.add_argument("--concurrency", type=int, default=32, help="sagas in flight")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, rows in rotated order")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    ap.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a row's timed run may take"
    )
    ap.add_argument("--quick", action="store_true", help="200 sagas, 16 in flight")
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.sagas, args.concurrency = 200, 16
    names = [n for n in args.rows.split(",") if n]
    unknown = set(names) - set(ROWS)
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; choose from {','.join(ROWS)}")
    if not args.url.startswith("postgresql"):
        print(f"saga_throughput: skipped, needs a postgresql {DB_ENV} (or --url)")
        return {"bench": "saga_throughput", "skipped": f"no postgresql {DB_ENV}"}
    rows = asyncio.run(measure(args, names))
    measured = report(rows, args.sagas, args.concurrency, args.rounds)
    result = {
        "bench": "saga_throughput",
        "sagas": args.sagas,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "rows": rows,
        "ratios": {m[0]: {"value": m[1], "per_round": m[2]} for m in measured},
    }
    write_json(args.json, result)
    if not all(r.get("verified", True) for r in rows):
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
