"""The README's commands run as written (``<!-- docs-test: NAME -->`` blocks).

Each marked block is run here or in ``tests/integration/test_readme_commands.py``
(those that need Kafka or other languages' toolchains), through the checked
copy of ``tests/readme_blocks.py``, which says what it changes and why.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.readme_blocks import (
    ROOT,
    Substitutions,
    blocks,
    checked_script,
    commands,
    named_extras,
)
from tests.venvs import clean_env, installed_venv
from wirebus.cli import load_app
from wirebus.testing import AppHarness

RUN_HERE = {"install", "new", "after-demo-serve", "after-demo-call", "app"}
RUN_IN_INTEGRATION = {"kafka", "tools", "codegen", "production-app", "production-run"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_script(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{script}\n--- stdout:\n{done.stdout}\n--- stderr:\n{done.stderr}"
    return done


def test_every_marked_block_is_run_by_a_docs_test() -> None:
    assert set(blocks()) == RUN_HERE | RUN_IN_INTEGRATION


def declared_extras() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(pyproject["project"]["optional-dependencies"]) - {"dev", "bench"}


def install_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]


def test_the_install_block_names_only_extras_that_exist() -> None:
    named = named_extras(blocks()["install"].text) | named_extras(blocks()["new"].text)

    assert named
    assert named <= declared_extras()


def test_the_extras_table_says_what_every_extra_enables() -> None:
    rows = {
        line.split("`")[1]
        for line in install_section().splitlines()
        if line.startswith("| `") and line.count("|") == 3
    }
    assert rows == declared_extras() - {"sql"}  # sql: the former name, in the postgres row


def shell_without_the_project() -> dict[str, str]:
    """A shell after `make demo`: the venv not active, no PYTHONPATH for gen/python.

    ``PYTHONPATH`` holds this checkout's ``src`` only: a worktree's ``.venv`` may be
    another checkout's, whose editable wirebus is that checkout's code.
    """
    env = clean_env(ROOT / ".venv")
    venv_bin = (str(ROOT / ".venv" / "bin"), str((ROOT / ".venv" / "bin").resolve()))
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p not in venv_bin)
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


@pytest.mark.slow
def test_after_make_demo_the_shop_is_served_and_called_as_the_readme_shows(tmp_path) -> None:
    subs = Substitutions(port=free_port())
    script = checked_script(
        blocks()["after-demo-serve"].text + blocks()["after-demo-call"].text, subs
    )
    env = {
        **shell_without_the_project(),
        "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}",
    }
    done = run_script(script, ROOT, env)

    assert "/shop.orders.v1.OrderService/PlaceOrder" in done.stdout  # wirebus describe
    assert '"orderId":' in done.stdout  # buf curl's reply


@pytest.mark.slow
def test_a_new_service_is_made_tested_and_run_as_the_readme_shows(tmp_path) -> None:
    venv = installed_venv("codegen,testing")
    script = checked_script(blocks()["new"].text, Substitutions(port=free_port()))

    done = run_script(script, tmp_path, clean_env(venv))

    assert "2 passed" in done.stdout
    assert (tmp_path / "inventory" / "gen" / "python" / "inventory" / "v1").is_dir()


def test_wirebus_new_prints_as_next_steps_the_commands_the_readme_shows_after_it(
    tmp_path: Path,
) -> None:
    shown = [c.split("  #", 1)[0].strip() for c in commands(blocks()["new"].text)]
    after = shown[shown.index("wirebus new inventory && cd inventory") + 1 :]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(
        [sys.executable, "-m", "wirebus", "new", "inventory"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip

    assert done.stdout.splitlines()[-1] == "next: cd inventory && " + " && ".join(after)


async def test_the_app_block_keeps_a_receipt_of_each_order_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = blocks()["app"].text
    module = text.splitlines()[0].removeprefix("# ").removesuffix(".py")
    (tmp_path / f"{module}.py").write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        app = load_app(f"{module}:app", str(tmp_path))
        receipts = sys.modules[module]
        async with AppHarness(app) as harness:
            placed = await harness.deliver(receipts.OrderPlaced(order_id="o1", total_cents=300))
            await harness.handled(placed)
            async with harness.database.engine.connect() as conn:
                rows = (await conn.execute(select(receipts.receipts))).all()
    finally:
        sys.modules.pop(module, None)

    assert [tuple(row) for row in rows] == [("o1", 300)]


def test_the_typescript_template_depends_on_no_test_layout_nor_python_version() -> None:
    for name in ("buf.gen.ts.yaml", "scripts/gen-ts"):
        text = (ROOT / name).read_text(encoding="utf-8")
        assert "tests/crosslang" not in text, name
        assert "python3.1" not in text, name
