"""`python -m sparsetune`: the same as the `sparsetune` console script."""

from .cli import main

main()
