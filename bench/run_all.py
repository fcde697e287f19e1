"""Run every wirebus benchmark and print one summary table.

Each benchmark runs in its own subprocess (no state shared between them) and
writes JSON that this script merges. Exit status: 0 when every benchmark ran
(whatever the numbers: nothing here asserts on timing), 1 if one crashed.

Run from the repository root:

    PYTHONPATH=gen/python:. .venv/bin/python bench/run_all.py           # full (~3 min)
    PYTHONPATH=gen/python:. .venv/bin/python bench/run_all.py --quick   # smoke (~40 s)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import code_env, code_root, machine_info, print_table  # noqa: E402

BENCHES = (
    "mediator_vs_cqrs",
    "converter",
    "gateway_vs_raw",
    "kafka_throughput",
    "relay_throughput",
    "consumer_backlog",
    "e2e_latency",
)
TIMEOUT_S = {
    "mediator_vs_cqrs": 300,
    "converter": 300,
    "gateway_vs_raw": 600,
    "kafka_throughput": 600,
    "relay_throughput": 900,
    "consumer_backlog": 900,
    "e2e_latency": 900,
}
# Benchmarks that need a service: run only when its environment variable is set.
NEEDS_ENV = {"kafka_throughput": "WIREBUS_KAFKA_BOOTSTRAP"}
# Benchmarks that need Kafka and PostgreSQL (a postgresql WIREBUS_DATABASE_URL).
NEEDS_KAFKA_AND_POSTGRES = {"relay_throughput", "consumer_backlog", "e2e_latency"}


def _has_kafka_and_postgres() -> bool:
    return bool(os.environ.get("WIREBUS_KAFKA_BOOTSTRAP")) and os.environ.get(
        "WIREBUS_DATABASE_URL", ""
    ).startswith("postgresql")


def run(name: str, extra: list[str], out_dir: Path) -> dict[str, Any] | None:
    out = out_dir / f"{name}.json"
    cmd = [sys.executable, str(HERE / f"{name}.py"), "--json", str(out), *extra]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    try:
        proc = subprocess.run(
            cmd, env=code_env(), cwd=code_root(), timeout=TIMEOUT_S[name], check=False
        )
    except subprocess.TimeoutExpired:
        print(f"!!! {name} did not finish within {TIMEOUT_S[name]} s", flush=True)
        return None
    if proc.returncode != 0 or not out.exists():
        print(f"!!! {name} failed with exit status {proc.returncode}", flush=True)
        return None
    return json.loads(out.read_text())


def summary_rows(results: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    m = results.get("mediator_vs_cqrs")
    if m:
        by = {r["key"]: r for r in m["rows"]}
        for key in ("a", "a2", "b", "c", "d1", "d2", "d3", "e1", "e2"):
            if key in by:
                r = by[key]
                rows.append(
                    [
                        "mediator",
                        f"{key} {r['label']}",
                        f"{r['us']:.2f} µs",
                        f"{r['x_baseline']:.1f}x baseline",
                        "",
                    ]
                )
        ra = m["ratios"]
        rows.append(
            [
                "mediator",
                "wirebus plain send overhead (b - a)",
                f"{ra['wirebus_b_overhead_us']:.2f} µs",
                "",
                _ok(ra["wirebus_b_overhead_us"] <= 2, "<= 2 µs"),
            ]
        )
        rows.append(
            [
                "mediator",
                "wirebus send + 1 event overhead (c - a)",
                f"{ra['wirebus_c_overhead_us']:.2f} µs",
                "",
                _ok(ra["wirebus_c_overhead_us"] <= 5, "<= 5 µs"),
            ]
        )
        rows.append(
            [
                "mediator",
                "python-cqrs default / wirebus (d1 / b)",
                f"{ra['cqrs_d1_over_wirebus_b']:.1f}x",
                "",
                _ok(ra["cqrs_d1_over_wirebus_b"] >= 10, ">= 10x"),
            ]
        )
        rows.append(
            [
                "mediator",
                "python-cqrs + event default / wirebus + event (e1 / c)",
                f"{ra['cqrs_e1_over_wirebus_c']:.1f}x",
                "",
                _ok(ra["cqrs_e1_over_wirebus_c"] >= 10, ">= 10x"),
            ]
        )
        rows.append(
            [
                "mediator",
                "python-cqrs no logging / wirebus (d3 / b)",
                f"{ra['cqrs_d3_over_wirebus_b']:.1f}x",
                "",
                "",
            ]
        )
    c = results.get("converter")
    if c:
        for r in c["rows"]:
            ratio = f"{r['ratio']:.2f}x {r['ratio_to']}" if r.get("ratio") is not None else ""
            rows.append(["converter", r["label"], f"{r['us']:.2f} µs", ratio, ""])
        ra = c["ratios"]
        rows.append(
            [
                "converter",
                "auto proto() / hand-written",
                f"{ra['auto_to_over_hand']:.2f}",
                "",
                _ok(ra["auto_to_over_hand"] <= 1.0, "<= 1.0"),
            ]
        )
        rows.append(
            [
                "converter",
                "auto from_proto() / hand-written",
                f"{ra['auto_from_over_hand']:.2f}",
                "",
                _ok(ra["auto_from_over_hand"] <= 1.0, "<= 1.0"),
            ]
        )
        for note in c.get("notes", []):
            rows.append(["converter", f"note: {note}", "", "", ""])
    g = results.get("gateway_vs_raw")
    if g:
        for r in g["rows"]:
            rows.append(
                [
                    "gateway",
                    f"{r['loop']} {r['kind']}",
                    f"{r['calls_per_s']:,.0f} calls/s",
                    f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['server_cpu_us_per_call']:.0f} µs server CPU/call",
                    ""
                    if r["kind"] == "raw"
                    else (
                        _ok(r["ratio"] >= 0.95, f"{r['ratio']:.2f} x raw, target >= 0.95")
                        if r["kind"] == "gateway"
                        else f"{r['ratio']:.2f} x raw"
                    ),
                ]
            )
    k = results.get("kafka_throughput")
    if k:
        targets = {"pub_b": 0.9, "con_b": 0.8}
        for r in k["rows"]:
            base = r["ratio_to"]
            target = targets.get(r["key"])
            ratio = f"{r['ratio']:.2f} x {base}"
            rows.append(
                [
                    "kafka",
                    f"{r['key']} {r['label']}",
                    f"{r['events_per_s']:,.0f} events/s",
                    f"{r['cpu_us_per_event']:.1f} µs CPU/event, {r['events']:,} events,"
                    f" median of {r['rounds']}",
                    ""
                    if r["key"] == base
                    else (
                        _ok(r["ratio"] >= target, f"{ratio}, target >= {target}")
                        if target is not None
                        else ratio
                    ),
                ]
            )
    rt = results.get("relay_throughput")
    if rt:
        for r in rt["rows"]:
            detail = f"{r['cpu_us_per_event']:.1f} µs CPU/event, {r['events']:,} events"
            if r.get("timed_out"):
                detail += " (time limit)"
            target = ""
            if r["key"] == "relay":
                target = _ok(r["ratio"] >= 0.8, f"{r['ratio']:.2f} x raw, target >= 0.8")
            elif r["key"] != "raw" and r["ratio"] is not None:
                target = f"{r['ratio']:.2f} x raw"
            rows.append(
                [
                    "relay",
                    f"{r['key']} {r['label']}",
                    f"{r['events_per_s']:,.0f} events/s",
                    detail,
                    target,
                ]
            )
    rows += _backlog_rows(results.get("consumer_backlog"))
    for e in (results.get("e2e_latency") or {}).get("steps", []):
        ms = e["e2e_ms"]
        rows.append(
            [
                "e2e",
                f"PlaceOrder at {e['rate_target']:.0f}/s -> OrderPlaced on Kafka",
                f"p50 {ms['p50']:.0f} ms, p99 {ms['p99']:.0f} ms, max {ms['max']:.0f} ms",
                f"{e['achieved_rate']:.0f} commands/s achieved, {e['ok']} ok,"
                f" {sum(e['errors'].values())} errors, {e['missing']} missing,"
                f" {e['server_cpu_ms_per_ok_call']:.2f} ms server CPU/command",
                "",
            ]
        )
    return rows


def _backlog_rows(b: dict[str, Any] | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for r in (b or {}).get("rows", []):
        ratio = r.get("ratio_to_noop")
        rows.append(
            [
                "backlog",
                f"{r['key']} {r['label']}",
                f"{r['records_per_s']:,.0f} records/s",
                f"{r['drained']:,}/{r['backlog']:,} drained in {r['drain_s']:.1f} s,"
                f" {r['cpu_us_per_record']:.0f} µs CPU/record"
                + (" (time limit)" if r["timed_out"] else ""),
                "" if r["key"] == "noop" or ratio is None else f"{ratio:.2f} x noop",
            ]
        )
    return rows


def _ok(ok: bool, target: str) -> str:
    return f"{'met' if ok else 'MISSED'} ({target})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="short run for smoke tests (2 s gateway windows)"
    )
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--json", default=None, help="also write the merged results here")
    args = ap.parse_args(argv)
    names = [n for n in (args.only.split(",") if args.only else BENCHES) if n]
    unknown = set(names) - set(BENCHES)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    extra = ["--quick"] if args.quick else []
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wirebus-bench-") as tmp:
        for name in names:
            env_var = NEEDS_ENV.get(name)
            if env_var and not os.environ.get(env_var):
                print(f"\n=== {name}: skipped, {env_var} is not set", flush=True)
                continue
            if name in NEEDS_KAFKA_AND_POSTGRES and not _has_kafka_and_postgres():
                print(
                    f"\n=== {name}: skipped, needs WIREBUS_KAFKA_BOOTSTRAP and a postgresql"
                    " WIREBUS_DATABASE_URL",
                    flush=True,
                )
                continue
            res = run(name, extra, Path(tmp))
            if res is None:
                failed.append(name)
            else:
                results[name] = res
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print_table(
        f"wirebus benchmarks, {stamp}{' (quick)' if args.quick else ''}: {machine_info()}",
        ["bench", "row", "value", "detail", "target"],
        summary_rows(results),
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"date": stamp, "quick": args.quick, "results": results}, indent=2, default=str
            )
        )
    if failed:
        print(f"\nfailed: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
