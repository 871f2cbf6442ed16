"""``python -m apkit.cli`` runs the command line."""

from apkit.cli import main

main()
