"""Tell a missing generated module from any other failed import.

``wirebus serve examples.shop.app:app`` in a checkout where ``buf generate``
never ran fails deep inside the app with ``No module named 'shop'``. That is
not a typo in the target: it is code that has to be generated. A missing
top-level package looks generated when a directory of the app's tree holds
``.proto`` files under that name: ``proto/<package>`` or, in a buf workspace
(``buf.gen.yaml`` or ``buf.yaml``), ``<module path>/<package>``, since buf
names a generated Python module after the path of its ``.proto`` file. A
missing third-party package (an extra not installed) is left alone.
:func:`missing_codegen_hint` then says what to run.

Example::

    try:
        importlib.import_module("examples.shop.app")
    except ModuleNotFoundError as exc:
        hint = missing_codegen_hint(exc, "examples.shop.app", [Path(".")])
        # "generated module 'shop' is missing: run `buf generate` in ... (wirebus
        #  finds gen/python through buf.gen.yaml; ...)"
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["generated_python_dir", "missing_codegen_hint"]

_PB2_SUFFIX = re.compile(r"_pb2(_grpc)?$")
_OUT = re.compile(r"^\s*out:\s*['\"]?([^'\"#\s]+)", re.MULTILINE)
_MODULE_PATH = re.compile(r"^\s*-?\s*path:\s*['\"]?([^'\"#\s]+)", re.MULTILINE)
_DEFAULT_OUT = "gen/python"


def missing_codegen_hint(
    exc: ModuleNotFoundError, target_module: str, roots: Iterable[Path]
) -> str | None:
    """One line naming the missing generated module and how to generate it, or ``None``.

    ``None`` when the missing module is the target itself (or one of its
    packages), when its top-level package exists, or when nothing in ``roots``
    or their parents suggests generated code.
    """
    name = exc.name
    if not name:
        return None
    top = name.partition(".")[0]
    if _is_target(name, target_module) or _exists(top):
        return None
    for directory in _upwards(roots):
        if any(_has_protos(d, top) for d in _proto_roots(directory)):
            return _hint(name, directory)
    return None


def generated_python_dir(start: Path) -> Path | None:
    """The Python output directory of the buf workspace ``start`` is in, if it was generated.

    The nearest ``buf.gen.yaml`` at or above ``start`` names it (the ``out:``
    of its Python plugin); ``None`` when there is no template or the directory
    does not exist yet. ``wirebus`` puts it on ``sys.path`` before it imports
    an app, so ``wirebus run app:app`` works after ``buf generate`` without
    ``PYTHONPATH``.

    Example::

        generated_python_dir(Path("."))  # Path('/home/me/shop/gen/python')
    """
    for directory in _upwards([start]):
        template = directory / "buf.gen.yaml"
        if template.is_file():
            out = directory / _python_out(template)
            return out if out.is_dir() else None
    return None


def _proto_roots(directory: Path) -> list[Path]:
    """``proto/``, and in a buf workspace its module paths and the workspace itself."""
    roots = [directory / "proto"]
    buf_yaml = directory / "buf.yaml"
    if buf_yaml.is_file():
        try:
            paths = _MODULE_PATH.findall(buf_yaml.read_text(encoding="utf-8"))
        except OSError:
            paths = []
        roots += [directory / p for p in paths]
    if buf_yaml.is_file() or (directory / "buf.gen.yaml").is_file():
        roots.append(directory)
    return roots


def _has_protos(root: Path, top: str) -> bool:
    """``root/top/**.proto``, or ``root/things.proto`` for a missing ``things_pb2``."""
    package = root / top
    if package.is_dir():
        return next(package.rglob("*.proto"), None) is not None
    stem = _PB2_SUFFIX.sub("", top)
    return stem != top and (root / f"{stem}.proto").is_file()


def _is_target(name: str, target_module: str) -> bool:
    return target_module == name or target_module.startswith(name + ".")


def _exists(top: str) -> bool:
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _upwards(roots: Iterable[Path]) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in roots:
        for directory in (root.resolve(), *root.resolve().parents):
            if directory not in seen:
                seen.add(directory)
                yield directory


def _hint(name: str, workspace: Path) -> str:
    template = workspace / "buf.gen.yaml"
    out = _shown(workspace / _python_out(template))
    where = _shown(workspace)
    generate = "`buf generate`" if where == "." else f"`buf generate` in {where}"
    if template.is_file():  # wirebus puts its output on sys.path: no PYTHONPATH to set
        return (
            f"generated module {name!r} is missing: run {generate}"
            f" (wirebus finds {out} through buf.gen.yaml; python alone needs {out} on PYTHONPATH)"
        )
    return (
        f"generated module {name!r} is missing: run {generate}"
        f" and put its output directory {out} on PYTHONPATH"
    )


def _python_out(buf_gen: Path) -> str:
    """The ``out:`` of the template's Python plugin (the first one naming python)."""
    try:
        outs = _OUT.findall(buf_gen.read_text(encoding="utf-8"))
    except OSError:
        return _DEFAULT_OUT
    return next((o for o in outs if "python" in o), outs[0] if outs else _DEFAULT_OUT)


def _shown(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative
