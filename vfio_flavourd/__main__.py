"""`python3 -m vfio_flavourd`: the installed command, as cli.run() runs it."""

from .cli import run

run()
