"""Before/after in one run: benchmarks against a baseline commit and the current tree, interleaved.

The baseline is materialised with ``git worktree add --detach`` in a temporary
directory (removed at the end; ``--keep-worktree`` keeps it, ``--baseline-dir``
uses an existing checkout instead). Its ``gen/`` is copied from this tree when
the protos (``proto/``, ``buf.yaml``, ``buf.gen.yaml``) are the same as the
baseline's, else made there with ``buf generate`` (``--gen`` forces either).

Each benchmark then runs ``--rounds`` times per side, interleaved: baseline,
current, baseline, current, ... (A B A B), each run in its own process on the
same interpreter, with ``PYTHONPATH`` = that side's ``gen/python``, root and
``src`` only, ``cwd`` and ``WIREBUS_BENCH_ROOT`` = that side (so the servers and
consumers the benchmarks start run that side's code and ``examples``). The
benchmark scripts are this tree's (``--scripts own`` runs each side's own
``bench/``, for a baseline the current scripts cannot drive). Reported per
metric (``_metrics.py``): the median of each side, after/before, and whether
that is better. Nothing is asserted; exit 1 only if a run crashed.

Run from the repository root, services up (``eval "$(scripts/services env)"``)::

    .venv/bin/python bench/compare.py --baseline HEAD~3 --bench kafka_throughput \\
        --rounds 3 --args kafka_throughput "--n 20000 --rows con_a,con_b" --out cmp.md
    .venv/bin/python bench/compare.py --baseline main --bench all --bench-args=--quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import ROOT_ENV, machine_info  # noqa: E402
from _metrics import metrics  # noqa: E402
from run_all import BENCHES, NEEDS_ENV, NEEDS_KAFKA_AND_POSTGRES, TIMEOUT_S  # noqa: E402
from run_all import _has_kafka_and_postgres as has_kafka_and_postgres  # noqa: E402

CURRENT = HERE.parent
PROTO_PATHS = ("proto", "buf.yaml", "buf.gen.yaml")


def git(*args: str, cwd: Path = CURRENT) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@contextlib.contextmanager
def baseline_checkout(args: argparse.Namespace) -> Iterator[Path]:
    """The baseline's directory: an existing one, or a detached worktree made for the run."""
    if args.baseline_dir:
        yield Path(args.baseline_dir).resolve()
        return
    sha = git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
    where = Path(tempfile.mkdtemp(prefix="wirebus-baseline-")) / sha[:12]
    git("worktree", "add", "--detach", str(where), sha)
    print(f"baseline {args.baseline} = {sha[:12]} in {where}", file=sys.stderr)
    try:
        prepare_gen(args, where, sha)
        yield where
    finally:
        if args.keep_worktree:
            print(f"kept the baseline worktree {where}", file=sys.stderr)
        else:
            git("worktree", "remove", "--force", str(where))


def prepare_gen(args: argparse.Namespace, where: Path, sha: str) -> None:
    """Give the baseline a ``gen/``: copied when its protos are this tree's, else generated."""
    mode = args.gen
    if mode == "auto":
        same = subprocess.run(
            ["git", "diff", "--quiet", sha, "--", *PROTO_PATHS], cwd=CURRENT, check=False
        )
        mode = "copy" if same.returncode == 0 and (CURRENT / "gen").is_dir() else "generate"
    if mode == "copy":
        shutil.copytree(CURRENT / "gen", where / "gen", symlinks=True)
        return
    buf = shutil.which("buf") or str(Path(sys.executable).with_name("buf"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run([buf, "generate"], cwd=where, env=env, check=True)


def side_env(root: Path) -> dict[str, str]:
    """The environment of a run of ``root``'s code: nothing of the other side on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(root / p) for p in ("gen/python", ".", "src"))
    env[ROOT_ENV] = str(root)
    return env


def check_side(root: Path) -> None:
    """Fail fast unless ``side_env(root)`` imports ``root``'s wirebus (not an installed one)."""
    out = subprocess.run(
        [sys.executable, "-c", "import wirebus; print(wirebus.__file__)"],
        cwd=root, env=side_env(root), check=True, capture_output=True, text=True,
    )  # fmt: skip
    found = Path(out.stdout.strip()).resolve()
    if not found.is_relative_to(root.resolve()):
        raise SystemExit(f"{root}: wirebus imports from {found}, not from that checkout")


def run_once(args: argparse.Namespace, name: str, root: Path, out: Path) -> dict[str, Any] | None:
    """One benchmark run against ``root``: its JSON, or None if it failed."""
    scripts = root / "bench" if args.scripts == "own" else HERE
    extra = shlex.split(args.bench_args) + shlex.split(dict(args.args or []).get(name, ""))
    cmd = [sys.executable, str(scripts / f"{name}.py"), "--json", str(out), *extra]
    print(f"--- {root.name}: {name} {' '.join(extra)}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(
            cmd, cwd=root, env=side_env(root), timeout=TIMEOUT_S.get(name, 900), check=False
        )
    except subprocess.TimeoutExpired:
        print(f"!!! {name} on {root} did not finish in time", file=sys.stderr)
        return None
    if proc.returncode != 0 or not out.exists():
        print(f"!!! {name} on {root} failed ({proc.returncode})", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def runnable(name: str) -> bool:
    env_var = NEEDS_ENV.get(name)
    if env_var and not os.environ.get(env_var):
        print(f"=== {name}: skipped, {env_var} is not set", file=sys.stderr)
        return False
    if name in NEEDS_KAFKA_AND_POSTGRES and not has_kafka_and_postgres():
        print(f"=== {name}: skipped, needs Kafka and a postgresql URL", file=sys.stderr)
        return False
    return True


Samples = dict[str, dict[str, list[list[float]]]]  # bench -> side -> per-round metric values


def measure(args: argparse.Namespace, sides: dict[str, Path], tmp: Path) -> tuple[Any, bool]:
    """Every benchmark, rounds interleaved A B A B; per bench, side and metric the values."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    better: dict[str, dict[str, bool]] = {}
    failed = False
    for name in args.names:
        values[name] = {side: {} for side in sides}
        better[name] = {}
        for rnd in range(args.rounds):
            for side, root in sides.items():
                res = run_once(args, name, root, tmp / f"{name}-{side}-{rnd}.json")
                if res is None:
                    failed = True
                    continue
                for key, m in metrics(name, res).items():
                    values[name][side].setdefault(key, []).append(m.value)
                    better[name][key] = m.higher_is_better
    return (values, better), failed


def report(values: Any, better: dict[str, dict[str, bool]], title: str) -> str:
    """Markdown: per benchmark, one line per metric with both medians and after/before."""
    lines = [f"## {title}", ""]
    for name, by_side in values.items():
        before, after = by_side["before"], by_side["after"]
        lines += [f"### {name}", "",
                  "| metric | before (median) | after (median) | after / before | | before runs"
                  " | after runs |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for key in sorted(set(before) | set(after), key=_order(before, after)):
            b, a = _median(before.get(key)), _median(after.get(key))
            ratio = a / b if a is not None and b not in (None, 0) else None
            verdict = ""
            if ratio is not None and abs(ratio - 1) >= 0.02:
                verdict = "better" if (ratio > 1) == better[name][key] else "worse"
            lines.append(
                f"| {key} | {_fmt(b)} | {_fmt(a)} | {_fmt(ratio, 2)} | {verdict} |"
                f" {_runs(before.get(key))} | {_runs(after.get(key))} |"
            )
        lines.append("")
    return "\n".join(lines)


def _order(*dicts: dict[str, Any]) -> Any:
    first: dict[str, int] = {}
    for d in dicts:
        for k in d:
            first.setdefault(k, len(first))
    return lambda k: first[k]


def _median(xs: list[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


def _fmt(x: float | None, digits: int | None = None) -> str:
    if x is None:
        return "-"
    if digits is None:
        digits = 0 if abs(x) >= 1000 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"


def _runs(xs: list[float] | None) -> str:
    return " / ".join(_fmt(x) for x in xs) if xs else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--baseline", help="baseline commit (any git revision)")
    where.add_argument("--baseline-dir", help="an existing checkout to use as the baseline")
    ap.add_argument("--bench", default="all", help=f"all, or a comma list of {','.join(BENCHES)}")
    ap.add_argument("--rounds", type=int, default=3, help="runs per side, interleaved (3)")
    ap.add_argument(
        "--bench-args", default="", help="arguments for every run (--bench-args=--quick)"
    )
    ap.add_argument("--args", nargs=2, action="append", metavar=("BENCH", "ARGS"),
                    help="arguments for one benchmark (repeatable)")  # fmt: skip
    ap.add_argument("--gen", choices=("auto", "copy", "generate"), default="auto")
    ap.add_argument("--scripts", choices=("current", "own"), default="current",
                    help="whose bench/ scripts run on the baseline (default: this tree's)")  # fmt: skip
    ap.add_argument("--keep-worktree", action="store_true")
    ap.add_argument("--out", default=None, help="also write the markdown report here")
    ap.add_argument("--json", default=None, help="also write every value here")
    args = ap.parse_args(argv)
    args.names = list(BENCHES) if args.bench == "all" else args.bench.split(",")
    unknown = set(args.names) - set(BENCHES)
    if unknown or args.rounds < 1:
        ap.error(f"unknown benchmark(s) {sorted(unknown)} or --rounds < 1")
    args.names = [n for n in args.names if runnable(n)]
    with baseline_checkout(args) as base, tempfile.TemporaryDirectory() as tmp:
        sides = {"before": base, "after": CURRENT}
        for root in sides.values():
            check_side(root)
        (values, better), failed = measure(args, sides, Path(tmp))
        head = git("rev-parse", "--short", "HEAD")
        dirty = " + uncommitted changes" if git("status", "--porcelain", "--", "src") else ""
        base_name = args.baseline or str(base)
        title = (
            f"before = {base_name}, after = {head}{dirty}; median of {args.rounds} interleaved"
            f" round(s) per side; {machine_info()}"
        )
    text = report(values, better, title)
    print("\n" + text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"title": title, "values": values}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
