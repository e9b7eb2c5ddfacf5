"""Experiments and the ``chaosgrad`` command line, on the public API of `systems` and `estimators`.

Three rooms, imports one way (a command imports the core, never another command; the core
imports no command): `experiments.core` (results store, sweeps, measurements, statistics, name
resolution, report, plotting, the command declaration); one package or module per command
(`curves`, `reproduce`, `advise`, `train`, `table`, `report`, `listing`), each declaring
``COMMANDS`` for `experiments.cli`; and `experiments.bench`, the benchmark scripts.
"""
