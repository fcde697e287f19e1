"""The headline numbers of each benchmark's JSON, flattened for ``compare.py``.

``metrics(name, result)`` returns ``{metric: Metric}``: one value per row of the
benchmark (rates, latencies, CPU per unit of work), named so the same metric of
two runs lines up. Unknown benchmarks and missing fields give fewer metrics,
never an error (a baseline may predate a row). Example::

    m = metrics("kafka_throughput", json.loads(Path("k.json").read_text()))
    m["con_b events/s"].value, m["con_b events/s"].higher_is_better   # 24544.0, True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

__all__ = ["Metric", "metrics"]


class Metric(NamedTuple):
    value: float
    higher_is_better: bool


Extract = Callable[[dict[str, Any]], Iterator[tuple[str, float, bool]]]


def _mediator(r: dict[str, Any]) -> Iterator[tuple[str, float, bool]]:
    for row in r.get("rows", []):
        yield f"{row['key']} µs/call", row["us"], False


def _converter(r: dict[str, Any]) -> Iterator[tuple[str, float, bool]]:
    for row in r.get("rows", []):
        yield f"{row.get('key', row['label'])} µs", row["us"], False


def _gateway(r: dict[str, Any]) -> Iterator[tuple[str, float, bool]]:
    for row in r.get("rows", []):
        name = f"{row['loop']} {row['kind']}"
        yield f"{name} calls/s", row["calls_per_s"], True
        yield f"{name} p99 ms", row["p99_ms"], False
        yield f"{name} server CPU µs/call", row["server_cpu_us_per_call"], False


def _kafka(r: dict[str, Any]) -> Iterator[tuple[str, float, bool]]:
    for row in r.get("rows", []):
        yield f"{row['key']} events/s", row["events_per_s"], True
        yield f"{row['key']} CPU µs/event", row["cpu_us_per_event"], False


def _backlog(r: dict[str, Any]) -> Iterator[tuple[str, float, bool]]:
    for row in r.get("rows", []):
        yield f"{row['key']} records/s", row["records_per_s"], True
        yield f"{row['key']} drain s", row["drain_s"], False
        if "records_per_s_from_start" in row:
            yield f"{row['key']} records/s from start", row["records_per_s_from_start"], True
        yield f"{row['key']} CPU µs/record", row["cpu_us_per_record"], False


def _e2e(r: dict[str, Any]) -> Iterator[tuple[str, float, bool]]:
    steps = r.get("steps") or ([r] if "rate_target" in r else [])  # older runs: one step
    for s in steps:
        at = f"@{s['rate_target']:g}/s"
        yield f"{at} achieved/s", s["achieved_rate"], True
        yield f"{at} errors", float(sum(s["errors"].values())), False
        yield f"{at} call p99 ms", s["call_ms"]["p99"], False
        yield f"{at} e2e p50 ms", s["e2e_ms"]["p50"], False
        yield f"{at} e2e p99 ms", s["e2e_ms"]["p99"], False
        if "server_cpu_ms_per_ok_call" in s:
            yield f"{at} server CPU ms/cmd", s["server_cpu_ms_per_ok_call"], False


EXTRACTORS: dict[str, Extract] = {
    "mediator_vs_cqrs": _mediator,
    "converter": _converter,
    "gateway_vs_raw": _gateway,
    "kafka_throughput": _kafka,
    "relay_throughput": _kafka,  # the same row shape: key, events_per_s, cpu_us_per_event
    "consumer_backlog": _backlog,
    "e2e_latency": _e2e,
}


def metrics(name: str, result: dict[str, Any]) -> dict[str, Metric]:
    """The metrics of benchmark ``name``'s JSON ``result`` (NaN values left out)."""
    extract = EXTRACTORS.get(name)
    if extract is None:
        return {}
    out = {}
    try:
        for key, value, higher in extract(result):
            if value is not None and not math.isnan(value):
                out[key] = Metric(float(value), higher)
    except (KeyError, TypeError):  # a format this script does not know: what was read so far
        pass
    return out
