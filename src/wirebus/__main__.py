"""``python -m wirebus`` is the ``wirebus`` command."""

from wirebus.cli import main

main()
