"""This checkout's paths, for tests that start ``python``/``wirebus`` in a subprocess.

A child process must import *this* checkout's wirebus: the ``.venv`` of a
worktree may be a link to another checkout's, whose editable install would
otherwise win. :data:`PYTHONPATH` puts this checkout's ``src`` first, then
its generated code (``gen/python``), then the checkout itself (``examples``,
``tests``, ``bench``).

Example::

    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    subprocess.run([sys.executable, "-m", "wirebus", "describe", SHOP_APP], env=env, check=True)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PYTHONPATH", "ROOT", "SRC"]

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PYTHONPATH = os.pathsep.join(str(p) for p in (SRC, ROOT / "gen" / "python", ROOT))
"""``src``, then ``gen/python``, then the checkout: what a subprocess of a test imports."""
