"""The README's marked code blocks, and the checked copy of a shell block that a test runs.

A block marked ``<!-- docs-test: NAME -->`` (the line before its fence) is
run by the docs tests (``tests/unit/test_readme_commands.py``,
``tests/integration/test_readme_commands.py``), so a README that drifts fails.
:func:`checked_script` turns a block into the bash script the test runs; it
changes only what a test on a shared machine must change, each on purpose:

- install lines (``pip install ...``, ``python3 -m venv ...``) are not run: the
  test runs in a venv holding what they install, and checks that every extra
  they name exists (:func:`named_extras`);
- ``scripts/services start|stop|restart`` is not run: the test session provides
  the services (they are shared, never restarted by a test);
- ``wirebus serve|run|consume|relay`` runs in the background until the end of
  the script; the script waits (bounded) for its start line and stops it with
  SIGTERM at the end, requiring exit status 0;
- the port 50051 becomes a free one, a consumer group gets a unique suffix and
  ``--start-at latest`` (the shared broker's backlog is other tests'), and
  ``WIREBUS_DATABASE_URL`` is the test's fresh database after ``eval``.

Example::

    script = checked_script(blocks()["after-demo-serve"].text, Substitutions(port=50123))
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_MARKED = re.compile(
    r"^<!-- docs-test: ([\w-]+) -->\n```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL
)
_LONG_RUNNING = re.compile(r"^wirebus (serve|run|consume|relay)\b")
_INSTALL = re.compile(r"^(pip install|python3? -m venv)\b")
_SERVICES = re.compile(r"^scripts/services (start|stop|restart)\b")
START_WITHIN = 60  # seconds a long-running command may take to print its start line


@dataclasses.dataclass(frozen=True)
class Block:
    """A marked block: its language and text."""

    name: str
    language: str
    text: str


@dataclasses.dataclass(frozen=True)
class Substitutions:
    """What the checked copy changes (see the module docstring)."""

    port: int
    unique: str = "docs"
    database_url: str | None = None


def blocks(readme: Path = README) -> dict[str, Block]:
    """Every ``<!-- docs-test: NAME -->`` block of the README, by name."""
    found = {}
    for name, language, text in _MARKED.findall(readme.read_text(encoding="utf-8")):
        assert name not in found, f"two README blocks are marked docs-test: {name}"
        found[name] = Block(name, language, text)
    return found


def commands(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment lines dropped."""
    joined = re.sub(r"\\\n\s*", "", text)
    joined = re.sub(r"\|\n\s*", "| ", joined)  # a pipe continued on the next line
    lines = [line.strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def named_extras(text: str) -> set[str]:
    """The extras ``pip install 'wirebus[a,b]'`` lines of ``text`` name."""
    extras: set[str] = set()
    for command in commands(text):
        for match in re.finditer(r"wirebus\[([\w,-]+)\]", command):
            extras.update(match[1].split(","))
    return extras


def checked_script(text: str, subs: Substitutions) -> str:
    """The bash script the docs test runs for the shell block ``text``."""
    lines = [_PRELUDE]
    for n, command in enumerate(commands(text)):
        lines.append(_checked(command, n, subs))
    lines.append("_stop_all")
    return "\n".join(lines) + "\n"


def _checked(command: str, n: int, subs: Substitutions) -> str:
    if _INSTALL.match(command):
        return f": not run, the venv of the test has it: {shlex.quote(command)}"
    if _SERVICES.match(command):
        return f": not run, the services are shared: {shlex.quote(command)}"
    command = command.replace("50051", str(subs.port))
    if command.startswith("eval ") and subs.database_url is not None:
        return f"{command}\nexport WIREBUS_DATABASE_URL={shlex.quote(subs.database_url)}"
    long_running = _LONG_RUNNING.match(_without_comment(command))
    if long_running is None:
        return command
    command = _without_comment(command)
    label = long_running[1]
    if label in ("run", "consume"):
        command = _own_group(command, subs.unique) + " --start-at latest"
    if label in ("run", "serve") and "--port" not in command:
        command += f" --port {subs.port}"
    log = f'"$_logs/{n}.log"'
    return f"{command} >{log} 2>&1 &\n_pids+=($!)\n_started {log} {label} $!"


def _own_group(command: str, unique: str) -> str:
    if "--group " in command:
        return re.sub(r"--group (\S+)", rf"--group \1-{unique}", command)
    return f"{command} --group docs-{unique}"


def _without_comment(command: str) -> str:
    return command.split("  #", 1)[0].rstrip()


_PRELUDE = f"""\
set -euo pipefail
_logs=$(mktemp -d)
_pids=()
_started() {{  # _started LOG LABEL PID: its start line within {START_WITHIN} s
    local deadline=$((SECONDS + {START_WITHIN}))
    until grep -q "^wirebus $2: " "$1"; do
        if ! kill -0 "$3" 2>/dev/null; then
            cat "$1" >&2; echo "docs-test: wirebus $2 exited early" >&2; return 1
        fi
        if ((SECONDS > deadline)); then
            cat "$1" >&2; echo "docs-test: wirebus $2 did not start" >&2; return 1
        fi
        sleep 0.1
    done
}}
_stop_all() {{  # SIGTERM to every background command; each must exit 0
    local pid rc=0
    for pid in "${{_pids[@]}}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${{_pids[@]}}"; do wait "$pid" || rc=$?; done
    _pids=()
    if ((rc)); then cat "$_logs"/*.log >&2; fi
    return "$rc"
}}
trap 'for p in "${{_pids[@]}}"; do kill -KILL "$p" 2>/dev/null || true; done' EXIT
"""


# The "Running in production" blocks (tests/integration/test_production_example.py)
PRODUCTION_COLLECTOR = "otel-collector:4317"
PRODUCTION_JWKS_URL = "https://id.example.com/.well-known/jwks.json"


@dataclasses.dataclass(frozen=True)
class ProductionSubstitutions:
    """What the checked copy of the "Running in production" blocks changes.

    The collector's address and the JWKS URL become the test's own servers on
    127.0.0.1 (TLS kept: both trust the test's CA); the certificate paths are
    the test's files; ``--host 0.0.0.0`` and ``--metrics-host 0.0.0.0`` become
    127.0.0.1 and the ports free ones (a shared machine); ``wirebus run`` gets
    its own consumer group and ``--start-at latest``, as in
    :func:`checked_script`. The ``export`` lines are the user's (SASL_SSL to a
    cluster): the test runs against the shared plaintext broker and its own
    fresh database instead.
    """

    collector: str
    jwks_url: str
    port: int
    metrics_port: int
    tls_cert: str
    tls_key: str
    client_ca: str
    group: str


@dataclasses.dataclass(frozen=True)
class ProductionRun:
    """The shell block, checked: its exports (as written) and its commands as argv lists."""

    exports: dict[str, str]
    commands: list[list[str]]

    def environment(self) -> dict[str, str]:
        """The exports the test applies as written: all but the ``WIREBUS_*`` settings of
        the user's Kafka cluster and database (see :class:`ProductionSubstitutions`)."""
        return {k: v for k, v in self.exports.items() if not k.startswith("WIREBUS_")}


def checked_production_app(text: str, subs: ProductionSubstitutions) -> str:
    """The ``shop_prod.py`` block with the test's collector and JWKS URL."""
    for original in (PRODUCTION_COLLECTOR, PRODUCTION_JWKS_URL):
        assert text.count(original) == 1, f"the production block no longer names {original}"
    return text.replace(PRODUCTION_COLLECTOR, subs.collector).replace(
        PRODUCTION_JWKS_URL, subs.jwks_url
    )


def checked_production_run(text: str, subs: ProductionSubstitutions) -> ProductionRun:
    """The production shell block's exports and its ``wirebus`` commands, substituted."""
    exports: dict[str, str] = {}
    runs: list[list[str]] = []
    for command in commands(text):
        words = shlex.split(command, comments=True)
        if words[0] == "export":
            for word in words[1:]:
                name, _, value = word.partition("=")
                exports[name] = value
            continue
        assert words[0] == "wirebus", f"not a wirebus command: {command}"
        runs.append(_production_args(words[1:], subs))
    return ProductionRun(exports, runs)


def _production_args(args: list[str], subs: ProductionSubstitutions) -> list[str]:
    values = {
        "--host": "127.0.0.1", "--port": str(subs.port), "--metrics-port": str(subs.metrics_port),
        "--metrics-host": "127.0.0.1",
        "--tls-cert": subs.tls_cert, "--tls-key": subs.tls_key, "--client-ca": subs.client_ca,
    }  # fmt: skip
    out = list(args)
    for i, word in enumerate(out[:-1]):
        if word in values:
            out[i + 1] = values[word]
    if out[0] == "run":
        out += ["--group", subs.group, "--start-at", "latest"]
    return out
