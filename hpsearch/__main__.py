"""``python -m hpsearch`` (used to start local workers with the same interpreter)."""

from hpsearch.cli import main

main()
