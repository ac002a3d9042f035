"""``python -m tokenfunnel``: the CLI, so that ``torchrun -m tokenfunnel bench ...`` can start it."""

from tokenfunnel.cli import main

main()
