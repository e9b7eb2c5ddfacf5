"""``python -m experiments.bench ARGS`` is ``python -m experiments.bench.speed ARGS``."""
from experiments.bench.speed import main

raise SystemExit(main())
