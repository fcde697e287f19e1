"""``wirebus new NAME``: a minimal service to start from.

It writes, from the templates in ``wirebus/templates/new``:

- ``proto/<name>/v1/<name>.proto``: a service with a command (``AddItem``), a
  query (``GetItem``) and an event (``ItemAdded``);
- ``buf.yaml`` and ``buf.gen.yaml``: offline code generation from a plain
  virtualenv (``pip install 'wirebus[codegen]'``), into ``gen/python``;
- ``app.py``: the app, a command handler and a query handler on a table
  (``metadata=``), and an event handler;
- ``tests/test_app.py``: its tests with :class:`wirebus.testing.AppHarness`;
- ``pyproject.toml`` (pytest's settings), ``README.md`` (the commands),
  ``.gitignore``.

Example::

    written = create_project("inventory", Path("inventory"))
    # then: cd inventory && buf generate && pytest && wirebus run app:app
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["create_project", "missing_tools", "package_name"]

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_TEMPLATE_SUFFIX = ".tmpl"
_PATH_TOKEN = "__package__"
_RENAMED = {"gitignore": ".gitignore"}
# Module names the project's own would shadow (its app is `app`, its tests `tests`).
_TAKEN = frozenset({"app", "tests", "test", "wirebus", "grpc", "google", "buf", "gen", "proto"})
# What the project's commands run: buf generate (buf, grpcio-tools), pytest (pytest-asyncio).
_MODULES = ("grpc_tools", "pytest", "pytest_asyncio")


def package_name(name: str) -> str:
    """The proto package and Python module name of project ``name`` (``my-shop`` -> ``my_shop``).

    Raises :class:`~wirebus.errors.ConfigurationError` for a name that cannot be one.

    Example::

        package_name("my-shop")  # "my_shop"
    """
    package = name.replace("-", "_")
    if not _NAME.fullmatch(package) or keyword.iskeyword(package):
        raise ConfigurationError(
            f"project name {name!r}: use lower-case letters, digits, '-' or '_',"
            " starting with a letter (e.g. inventory, my-shop)"
        )
    if package in _TAKEN or package in sys.stdlib_module_names:
        raise ConfigurationError(
            f"project name {name!r} would shadow the module {package!r}: choose another"
        )
    return package


def missing_tools() -> list[str]:
    """What ``buf generate`` and ``pytest`` of a new project need and this environment lacks.

    Empty after ``pip install 'wirebus[codegen,testing]'``.

    Example::

        missing_tools()  # after `pip install wirebus`: ["buf", "grpc_tools", "pytest", ...]
    """
    beside = Path(sys.executable).parent / "buf"  # buf-bin's, in a venv not activated
    missing = [] if shutil.which("buf") or beside.is_file() else ["buf"]
    return missing + [m for m in _MODULES if importlib.util.find_spec(m) is None]


def create_project(name: str, directory: Path) -> list[Path]:
    """Write the project ``name`` into ``directory`` (new or empty); return the files written.

    Example::

        create_project("inventory", Path("/tmp/inventory"))
    """
    package = package_name(name)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigurationError(f"{directory} exists and is not empty: choose another --dir")
    values = {
        "{{name}}": name,
        "{{package}}": package,
        "{{Service}}": "".join(part.capitalize() for part in package.split("_")) + "Service",
    }
    written = []
    for relative, template in _templates(resources.files("wirebus") / "templates" / "new"):
        target = directory / _target_path(relative, package)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_render(template.read_text(encoding="utf-8"), values), encoding="utf-8")
        written.append(target)
    return written


def _templates(
    root: Traversable, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Traversable]]:
    """Every ``*.tmpl`` file under ``root``, with its path relative to it, sorted."""
    found: list[tuple[tuple[str, ...], Traversable]] = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found += _templates(entry, (*prefix, entry.name))
        elif entry.name.endswith(_TEMPLATE_SUFFIX):
            found.append(((*prefix, entry.name), entry))
    return found


def _target_path(relative: tuple[str, ...], package: str) -> Path:
    parts = [part.replace(_PATH_TOKEN, package) for part in relative]
    parts[-1] = parts[-1].removesuffix(_TEMPLATE_SUFFIX)
    parts[-1] = _RENAMED.get(parts[-1], parts[-1])
    return Path(*parts)


def _render(text: str, values: dict[str, str]) -> str:
    for token, value in values.items():
        text = text.replace(token, value)
    return text
