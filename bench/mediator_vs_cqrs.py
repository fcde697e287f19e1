"""Per-call cost of in-process dispatch: wirebus Mediator vs python-cqrs RequestMediator.

Rows (all in one process, one event loop, handlers never suspend):

  a   baseline: ``handlers[type(q)]`` + ``await handler(q)``
  a2  baseline with one event, by hand: the handler builds the event and
      appends it to a list, then the one event handler is awaited
  b   wirebus ``Mediator.send`` with a plain handler
  c   wirebus ``send`` whose handler emits one event (``ctx.emit``), handled
      in-process by one event handler
  d1  python-cqrs ``RequestMediator.send``, bootstrapped by default
      (``cqrs.requests.bootstrap``: LoggingMiddleware added, the ``cqrs``
      logger left at the DEBUG level python-cqrs sets on import, no handlers
      configured in this process)
  d2  d1 with the ``cqrs`` logger at WARNING (``logger.debug`` returns early,
      but LoggingMiddleware still builds ``request.to_dict()`` for its args)
  d3  python-cqrs without LoggingMiddleware (``setup_event_emitter`` +
      ``setup_mediator(middlewares=[])``, the documented lower-level path)
  e1  python-cqrs default bootstrap, handler emits one DomainEvent handled
      in-process by one EventHandler
  e2  e1 built like d3 (no logging middleware, logger at WARNING)

Run: ``PYTHONPATH=gen/python:. .venv/bin/python bench/mediator_vs_cqrs.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_async, machine_info, print_table, run_loop, write_json

import wirebus

# ---------------------------------------------------------------- wirebus side


class Ack(wirebus.Message):
    id: str


class Bump(wirebus.Command[Ack]):
    id: str


class BumpAndTell(wirebus.Command[Ack]):
    id: str


class Bumped(wirebus.Event):
    id: str


ACK = Ack(id="ack")
_seen = [0]

router = wirebus.Router("bench")


@router.handler
async def bump(cmd: Bump) -> Ack:
    return ACK


@router.handler
async def bump_and_tell(cmd: BumpAndTell, ctx: wirebus.Context) -> Ack:
    ctx.emit(Bumped(id=cmd.id))
    return ACK


@router.handler
async def on_bumped(event: Bumped) -> None:
    _seen[0] += 1


# ---------------------------------------------------------------- python-cqrs side
# Imported lazily inside build_cqrs(): importing cqrs sets its logger to DEBUG.


def build_cqrs(*, logging_middleware: bool, with_event: bool) -> Any:
    import cqrs
    import di
    from cqrs.bootstrap import requests as cqrs_bootstrap

    class CAck(cqrs.Response):
        id: str

    class CBump(cqrs.Request):
        id: str

    class CBumped(cqrs.DomainEvent):
        id: str

    c_ack = CAck(id="ack")

    class CBumpHandler(cqrs.RequestHandler[CBump, CAck]):
        async def handle(self, request: CBump) -> CAck:
            return c_ack

    class CBumpAndTellHandler(cqrs.RequestHandler[CBump, CAck]):
        def __init__(self) -> None:
            self._events: list[Any] = []

        @property
        def events(self) -> list[Any]:
            return self._events

        async def handle(self, request: CBump) -> CAck:
            self._events.append(CBumped(id=request.id))
            return c_ack

    class CBumpedHandler(cqrs.EventHandler[CBumped]):
        async def handle(self, event: CBumped) -> None:
            _seen[0] += 1

    def commands(mapper: cqrs.RequestMap) -> None:
        mapper.bind(CBump, CBumpAndTellHandler if with_event else CBumpHandler)

    def events(mapper: cqrs.EventMap) -> None:
        mapper.bind(CBumped, CBumpedHandler)

    if logging_middleware:
        mediator = cqrs_bootstrap.bootstrap(
            di_container=di.Container(), commands_mapper=commands, domain_events_mapper=events
        )
    else:
        container = cqrs.DIContainer()
        container.attach_external_container(di.Container())
        emitter = cqrs_bootstrap.setup_event_emitter(container, events)
        mediator = cqrs_bootstrap.setup_mediator(
            emitter, container, middlewares=[], commands_mapper=commands
        )
    return mediator, CBump(id="o-1")


# ---------------------------------------------------------------- run


async def measure(repeats: int, budget: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    async def row(key: str, label: str, fn: Any) -> None:
        r = await bench_async(fn, repeats=repeats, budget_s=budget)
        r.update(key=key, label=label)
        rows.append(r)
        print(f"  {key:3} {label:58} {r['us']:9.3f} µs", file=sys.stderr, flush=True)

    # a: baseline
    table = {Bump: bump}
    q = Bump(id="o-1")

    async def baseline() -> Any:
        return await table[type(q)](q)

    await row("a", "baseline: dict lookup + await handler", baseline)

    # a2: the same by hand with one event: what (c) does minus the framework
    events_of = {Bumped: (on_bumped,)}
    q_ev = BumpAndTell(id="o-1")

    async def handler_emitting(cmd: BumpAndTell, out: list[Any]) -> Ack:
        out.append(Bumped(id=cmd.id))
        return ACK

    hand_table = {BumpAndTell: handler_emitting}

    async def baseline_event() -> Any:
        out: list[Any] = []
        result = await hand_table[type(q_ev)](q_ev, out)
        for e in out:
            for h in events_of[type(e)]:
                await h(e)
        return result

    await row("a2", "baseline + event: build event, list, await 1 handler", baseline_event)

    app = wirebus.App(name="bench", routers=[router])
    async with app.mediator() as m:
        send = m.send
        await row("b", "wirebus send, plain handler", lambda: send(q))
        q2 = BumpAndTell(id="o-1")
        before = _seen[0]
        await row("c", "wirebus send + ctx.emit -> 1 event handler", lambda: send(q2))
        assert _seen[0] > before, "wirebus event handler did not run"

    cqrs_logger = logging.getLogger("cqrs")
    shipped_level = None
    for key, label, mw, ev, level in (
        ("d1", "python-cqrs send, default bootstrap (as shipped)", True, False, None),
        (
            "d2",
            "python-cqrs send, default bootstrap, 'cqrs' logger WARNING",
            True,
            False,
            logging.WARNING,
        ),
        ("d3", "python-cqrs send, no LoggingMiddleware", False, False, logging.WARNING),
        ("e1", "python-cqrs send + 1 DomainEvent handler (as shipped)", True, True, None),
        (
            "e2",
            "python-cqrs send + 1 DomainEvent handler, no logging",
            False,
            True,
            logging.WARNING,
        ),
    ):
        mediator, req = build_cqrs(logging_middleware=mw, with_event=ev)
        if shipped_level is None:
            shipped_level = cqrs_logger.level  # what importing cqrs left it at
        cqrs_logger.setLevel(shipped_level if level is None else level)
        before = _seen[0]
        csend = mediator.send
        await row(key, label, lambda csend=csend, req=req: csend(req))
        if ev:
            assert _seen[0] > before, "python-cqrs event handler did not run"
    cqrs_logger.setLevel(shipped_level or logging.NOTSET)
    return rows


def derive(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["key"]: r for r in rows}
    base = by["a"]["us"]
    for r in rows:
        r["overhead_us"] = r["us"] - base
        r["x_baseline"] = r["us"] / base
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    budget = 0.05 if args.quick else 0.2
    print(machine_info(), file=sys.stderr)
    rows = derive(run_loop(measure(repeats, budget), args.loop))
    by = {r["key"]: r for r in rows}
    ratios = {
        "cqrs_d1_over_wirebus_b": by["d1"]["us"] / by["b"]["us"],
        "cqrs_d2_over_wirebus_b": by["d2"]["us"] / by["b"]["us"],
        "cqrs_d3_over_wirebus_b": by["d3"]["us"] / by["b"]["us"],
        "cqrs_e1_over_wirebus_c": by["e1"]["us"] / by["c"]["us"],
        "cqrs_e2_over_wirebus_c": by["e2"]["us"] / by["c"]["us"],
        "wirebus_b_overhead_us": by["b"]["overhead_us"],
        "wirebus_c_overhead_us": by["c"]["overhead_us"],
        "wirebus_c_over_a2_us": by["c"]["us"] - by["a2"]["us"],
    }
    print_table(
        f"mediator_vs_cqrs ({args.loop} loop, median of {repeats} repeats)",
        ["row", "what", "µs/call", "min", "max", "over baseline µs", "x baseline", "N/repeat"],
        [
            [
                r["key"],
                r["label"],
                r["us"],
                r["us_min"],
                r["us_max"],
                r["overhead_us"],
                r["x_baseline"],
                r["n"],
            ]
            for r in rows
        ],
    )
    print_table(
        "mediator_vs_cqrs: ratios and targets",
        ["measure", "value", "target"],
        [
            [
                "python-cqrs default (d1) / wirebus send (b)",
                ratios["cqrs_d1_over_wirebus_b"],
                ">= 10x",
            ],
            [
                "python-cqrs logger WARNING (d2) / wirebus (b)",
                ratios["cqrs_d2_over_wirebus_b"],
                "-",
            ],
            ["python-cqrs no logging mw (d3) / wirebus (b)", ratios["cqrs_d3_over_wirebus_b"], "-"],
            [
                "python-cqrs + event default (e1) / wirebus + event (c)",
                ratios["cqrs_e1_over_wirebus_c"],
                ">= 10x",
            ],
            [
                "python-cqrs + event no logging (e2) / wirebus + event (c)",
                ratios["cqrs_e2_over_wirebus_c"],
                "-",
            ],
            ["wirebus plain send overhead µs (b - a)", ratios["wirebus_b_overhead_us"], "<= 2"],
            ["wirebus send + 1 event overhead µs (c - a)", ratios["wirebus_c_overhead_us"], "<= 5"],
            [
                "  of which framework, not event/handler work (c - a2)",
                ratios["wirebus_c_over_a2_us"],
                "-",
            ],
        ],
    )
    result = {"bench": "mediator_vs_cqrs", "loop": args.loop, "rows": rows, "ratios": ratios}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
