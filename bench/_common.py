"""Shared helpers of the wirebus benchmarks: timing, statistics, tables, results.

Every benchmark script prints its own table and, with ``--json PATH``, writes
its rows as JSON so ``run_all.py`` can print one summary. Nothing here
asserts on timing: these are measurements, not tests.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Row",
    "Window",
    "bench_async",
    "run_loop",
    "bench_sync",
    "calibrate",
    "code_env",
    "code_root",
    "machine_info",
    "percentile",
    "print_table",
    "proc_cpu_seconds",
    "write_json",
]

Row = dict[str, Any]

ROOT_ENV = "WIREBUS_BENCH_ROOT"


def code_root() -> Path:
    """The checkout whose ``src``, ``gen/python`` and ``examples`` are measured.

    ``WIREBUS_BENCH_ROOT`` when set (``compare.py`` sets it to the baseline's
    worktree), else the checkout holding this ``bench`` directory. Example:
    ``subprocess.Popen([...], cwd=code_root(), env=code_env())``.
    """
    return Path(os.environ.get(ROOT_ENV) or Path(__file__).resolve().parent.parent)


def code_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the measured checkout first on ``PYTHONPATH``."""
    env = dict(os.environ)
    root = code_root()
    paths = [str(root / "gen" / "python"), str(root), str(root / "src")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def machine_info() -> str:
    """One line naming the machine, Python and the libraries measured."""
    import google.protobuf
    import grpc
    from google.protobuf.internal import api_implementation

    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, "
        f"protobuf {google.protobuf.__version__} ({api_implementation.Type()})"
    )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


# ---------------------------------------------------------------- micro-benchmarks


def calibrate(
    run: Callable[[int], float], budget_s: float, *, start: int = 100, cap: int = 2_000_000
) -> int:
    """The call count ``n`` such that ``run(n)`` takes about ``budget_s`` seconds.

    ``run(n)`` returns elapsed seconds. Bounded: at most ~20 doublings, n <= cap.
    """
    n = start
    for _ in range(20):
        elapsed = run(n)
        if elapsed >= budget_s / 4 or n >= cap:
            break
        n *= 4 if elapsed < budget_s / 40 else 2
    per_call = max(elapsed / n, 1e-9)
    return max(1, min(cap, int(budget_s / per_call)))


def _summary(per_call_s: list[float], n: int) -> Row:
    us = sorted(x * 1e6 for x in per_call_s)
    return {
        "us": statistics.median(us),
        "us_min": us[0],
        "us_max": us[-1],
        "n": n,
        "repeats": len(us),
    }


def bench_sync(fn: Callable[[], Any], *, repeats: int = 7, budget_s: float = 0.2) -> Row:
    """Median µs per call of ``fn()`` over ``repeats`` batches of ~``budget_s`` each."""

    def run(n: int) -> float:
        rng = range(n)
        t0 = time.perf_counter()
        for _ in rng:
            fn()
        return time.perf_counter() - t0

    run(10)  # warm-up (first-call costs, caches)
    n = calibrate(run, budget_s)
    gc.collect()
    samples = [run(n) / n for _ in range(repeats)]
    return _summary(samples, n)


async def bench_async(
    fn: Callable[[], Awaitable[Any]], *, repeats: int = 7, budget_s: float = 0.2
) -> Row:
    """Median µs per call of ``await fn()`` over ``repeats`` batches of ~``budget_s`` each."""

    async def run(n: int) -> float:
        rng = range(n)
        t0 = time.perf_counter()
        for _ in rng:
            await fn()
        return time.perf_counter() - t0

    await run(10)
    # calibrate (async version of calibrate(); bounded the same way)
    n = 100
    for _ in range(20):
        elapsed = await run(n)
        if elapsed >= budget_s / 4 or n >= 2_000_000:
            break
        n *= 4 if elapsed < budget_s / 40 else 2
    n = max(1, min(2_000_000, int(budget_s / max(elapsed / n, 1e-9))))
    gc.collect()
    samples = [await run(n) / n for _ in range(repeats)]
    return _summary(samples, n)


def run_loop(coro: Awaitable[Any], loop: str = "asyncio") -> Any:
    """Run ``coro`` on a fresh loop of the given kind (``asyncio`` or ``uvloop``)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    return asyncio.run(coro)  # type: ignore[arg-type]


class Window:
    """Wall and process CPU time of a timed section."""

    def __enter__(self) -> Window:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not hasattr(self, "t1"):
            self.t1, self.c1 = time.perf_counter(), time.process_time()

    def result(self, events: int, **extra: Any) -> dict[str, Any]:
        wall = self.t1 - self.t0
        return {
            "events": events,
            "seconds": wall,
            "events_per_s": events / wall,
            "cpu_us_per_event": (self.c1 - self.c0) / events * 1e6,
            **extra,
        }


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``); nan elsewhere.

    Example: ``c0 = proc_cpu_seconds(server.pid)`` ... ``proc_cpu_seconds(server.pid) - c0``.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


# ---------------------------------------------------------------- output


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # nan
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], file: Any = None
) -> None:
    """A plain fixed-width table (also valid Markdown)."""
    out = file or sys.stdout
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    print(f"\n### {title}\n", file=out)
    print(
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |", file=out
    )
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for r in cells:
        print(
            "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |", file=out
        )
    out.flush()


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=str)
