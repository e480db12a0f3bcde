"""``python -m robustlab``: the same as the ``robustlab`` command."""
from robustlab.cli import main

main()
