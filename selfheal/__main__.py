"""``python -m selfheal``: the same CLI as the ``selfheal`` command (for environments without its script)."""

from selfheal.cli import main

main()
