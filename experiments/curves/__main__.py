"""``python -m experiments.curves ARGS`` is ``chaosgrad curves ARGS``."""
import sys

from experiments.cli import main

sys.exit(main(["curves", *sys.argv[1:]]))
