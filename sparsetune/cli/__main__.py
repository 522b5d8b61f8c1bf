"""`python -m sparsetune.cli`: the same as the `sparsetune` console script."""

from . import main

main()
