"""Where a process's CPU goes: ``py-spy record`` of a running process, summed into a top-N.

``py-spy`` (PyPI, in the ``bench`` extra) samples the target's stacks from
outside (``--nonblocking`` by default: the target is never paused; ``native=True``
adds C and Cython frames but pauses the target for each sample). Idle threads
are not sampled, and samples whose leaf is a wait (``epoll_wait``, futexes, as
native mode reports them) are counted apart, so the tables are CPU, not wall time. The raw (collapsed) output is kept beside a short breakdown:

* by area: the leaf frame's package (``wirebus.gateway``, ``grpc``, ``asyncpg``,
  ``sqlalchemy``, ``aiokafka``, ``google.protobuf``, ``asyncio``, ...);
* by function, self: samples whose leaf is that function;
* by function, inclusive: samples with that function anywhere on the stack,
  for the frames of wirebus and the example app only (the others' inclusive
  counts are mostly the event loop's and click's frames at the root).

Example::

    spy = start_record(server.pid, seconds=20, out=Path("/tmp/server.pyspy"))
    ...                                   # drive the load
    text = breakdown(finish_record(spy, Path("/tmp/server.pyspy")), top=25)
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["breakdown", "finish_record", "start_record"]

RATE_HZ = 200
_WAITS = ("epoll_wait", "epoll_pwait", "poll", "select", "futex", "pthread_cond", "sem_wait",
          "nanosleep", "sigtimedwait")  # fmt: skip
_OURS = ("wirebus/", "examples/")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _pyspy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    return found


def start_record(
    pid: int, *, seconds: float, out: Path, native: bool = False
) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (collapsed stacks); returns at once.

    ``native`` adds C/Cython frames (uvloop, grpc's core, upb, asyncpg's protocol),
    which py-spy can only unwind by pausing the target for each sample (that slows
    the target down: call latency rises); without it the target is never paused
    and C time shows as its nearest Python frame (``Runner.run`` under uvloop).
    """
    mode = ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(
        [_pyspy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
         "--rate", str(RATE_HZ), *mode, "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def finish_record(spy: subprocess.Popen[bytes], out: Path, timeout: float = 60) -> Path:
    """Wait for ``py-spy`` to write ``out`` (bounded); raise with its stderr if it failed."""
    try:
        _, err = spy.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')}")
    return out


def _area(path: str) -> str:
    """The package a frame's file belongs to (py-spy prints paths relative to sys.path)."""
    if not path or path.startswith("<"):
        return path or "?"
    name = Path(path).name
    if ".so" in name:  # a native frame: the shared object it is in
        return name.split(".cpython")[0].split(".so")[0]
    parts = Path(_short(path)).parts
    if parts[0] == "wirebus":
        return "wirebus." + Path(parts[1]).stem if len(parts) > 1 else "wirebus"
    if parts[:2] == ("google", "protobuf"):
        return "google.protobuf"
    if len(parts) == 1:
        return f"{Path(parts[0]).stem} (stdlib)"
    return parts[0]


def _stacks(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    """(frames as (function, file), samples) of each collapsed line, root first."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = []
        for frame in body.split(";"):
            m = _FRAME.match(frame)
            frames.append((m["func"], m["file"]) if m else (frame, ""))
        stacks.append((frames, int(count)))
    return stacks


def breakdown(path: Path, *, top: int = 25) -> str:
    """A markdown top-N of the collapsed stacks in ``path`` (see the module docstring)."""
    stacks = _stacks(path)
    waits = sum(n for frames, n in stacks if any(w in frames[-1][0] for w in _WAITS))
    stacks = [(frames, n) for frames, n in stacks if not any(w in frames[-1][0] for w in _WAITS)]
    total = sum(n for _, n in stacks) or 1
    areas: collections.Counter[str] = collections.Counter()
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        func, file = frames[-1]
        areas[_area(file)] += n
        self_t[f"{func} ({_short(file)})"] += n
        for name in {f"{f} ({_short(p)})" for f, p in frames if _short(p).startswith(_OURS)}:
            incl[name] += n
    out = [
        f"{total:,} CPU samples at {RATE_HZ} Hz ({waits:,} more whose leaf is a wait, left out)",
        "",
    ]
    for title, counter in (("area (leaf frame)", areas), ("function, self", self_t),
                           ("wirebus/examples function, inclusive", incl)):  # fmt: skip
        out += [f"| {title} | samples | % |", "|---|---|---|"]
        out += [f"| `{k}` | {v:,} | {100 * v / total:.1f} |" for k, v in counter.most_common(top)]
        out.append("")
    return "\n".join(out)


def _short(path: str) -> str:
    """``path`` from its package on (absolute paths are cut at site-packages or src)."""
    parts = Path(path).parts
    for anchor in ("site-packages", "src"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    return path
