"""`python -m scaleops.cli ...` is the `scaleops` command."""

from scaleops.cli.app import main

main()
