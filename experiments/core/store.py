"""The results store of one output directory: an embedded SQLite file, one row per finished cell.

A sweep is a list of `Cell`s (kind of experiment, system, estimator, hyper-parameters, seed).
Each cell is computed once: `ResultsStore.put` writes its metrics in a single transaction as
soon as it is done, and a rerun skips every cell whose key is already there. Because SQLite
commits atomically (journal in WAL mode), killing a sweep (Ctrl-C, kill -9) loses at most the
cell in flight and never leaves a half-written row; changing a setting changes the cell keys,
so only the new cells are computed. A cell's key also carries `METRICS_VERSION` (and the cell's
own ``version``, which a command bumps when it changes what its kind measures), so a cell stored
under an older definition of its metrics is recomputed, never reused.

Opening a store waits for other processes (a busy timeout in force before the journal switches
to WAL, so two sweeps creating one store at once both succeed) and checks the file
(``PRAGMA quick_check``) before anything is written: a damaged file is one ValueError naming it
and how to recover.

Example::

    store = ResultsStore("results/run1")
    cell = Cell("curves", "logistic_map", "pes", {"T": 100, "K": 10, "sigma": 0.01}, seed=0)
    if not store.done(cell):
        store.put(cell, {"bias2": 1e-4, "variance": 2e-3}, steps=12800, seconds=0.4)
    store.rows("curves", system="logistic_map")   # list of dicts, params and metrics decoded
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Cell", "ResultsStore", "library_version", "environment", "STORE_FILE",
           "METRICS_VERSION"]

STORE_FILE = "results.sqlite"
# The version of the shared metric definitions (core.stats, core.measure) that every cell key
# carries: bump it when a definition changes, and every stored cell is recomputed.
METRICS_VERSION = 1
_BUSY_SECONDS = 30.0
_JITTER = random.Random()  # sleeps between retries of a locked store (no result depends on it)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key       TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    system    TEXT NOT NULL,
    estimator TEXT NOT NULL,
    params    TEXT NOT NULL,
    seed      INTEGER NOT NULL,
    metrics   TEXT NOT NULL,
    steps     INTEGER NOT NULL,
    seconds   REAL NOT NULL,
    version   TEXT NOT NULL,
    device    TEXT NOT NULL,
    created   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_kind ON cells (kind, system);
CREATE TABLE IF NOT EXISTS runs (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    versions TEXT NOT NULL,
    started TEXT NOT NULL
);
"""


def library_version() -> str:
    """chaosgrad's installed version ("unknown" when run from a bare checkout)."""
    try:
        from importlib.metadata import version
        return version("chaosgrad")
    except Exception:  # not installed: running from a source tree
        return "unknown"


def _jsonable(x: Any) -> Any:
    """Plain JSON values: tuples become lists, non-finite floats become strings."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)  # 'nan', 'inf', '-inf': JSON has no literal for them
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:  # numpy / torch scalars
        return _jsonable(x.item())
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    return x


def _decode(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _decode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v) for v in x]
    if x in ("nan", "inf", "-inf"):
        return float(x)
    return x


def _dumps(x: Any) -> str:
    return json.dumps(_jsonable(x), sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Cell:
    """One unit of work of a sweep, identified by everything that determines its result.

    Attributes:
        kind: the experiment, e.g. ``"curves"`` or ``"fig1_variance"``.
        system: registry name of the system.
        estimator: registry name of the estimator (or ``"-"`` when none applies).
        params: JSON-able hyper-parameters (T, K, sigma, pairs, regime, theta, ...).
        seed: the seed of this cell's randomness.
        version: the version of this kind's metric definitions (bump it when they change).
    """

    kind: str
    system: str
    estimator: str = "-"
    params: dict = field(default_factory=dict)
    seed: int = 0
    version: int = 1

    @property
    def key(self) -> str:
        """A stable hash of the cell's identity (equal settings give equal keys) and of the
        metric definitions it was computed with (`METRICS_VERSION`, ``version``)."""
        identity = [self.kind, self.system, self.estimator, self.params, self.seed,
                    f"metrics-{METRICS_VERSION}.{self.version}"]
        digest = _source_digest(self.system)
        if digest:  # a user's file.py:attr: an edited file is a new system (registered: none)
            identity.append(f"source-{digest}")
        text = _dumps(identity)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def _source_digest(system: str) -> str:
    if ":" not in system:  # a registered name: no file of the user's behind it
        return ""
    from experiments.core.resolve import source_digest  # torch and systems: only when needed
    try:
        return source_digest(system)
    except ValueError:  # the file is gone: the cell is what it was
        return ""


class ResultsStore:
    """SQLite store ``DIR/results.sqlite`` of finished cells and of the commands that ran.

    Args:
        directory: the output directory (created if missing).
    Raises:
        ValueError: when the directory cannot be created or written, or the store file is
            damaged (the message names the file and how to recover).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / STORE_FILE
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=_BUSY_SECONDS, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise ValueError(f"cannot write results to {str(directory)!r}: {err}") from None
        try:
            self._open()
        except sqlite3.DatabaseError as err:
            self._conn.close()
            if _damaged(err):
                raise ValueError(self._damaged_message(err)) from None
            raise ValueError(f"cannot write results to {str(directory)!r}: {err}") from None

    def _open(self) -> None:
        """Check the file, switch to WAL, create the tables: retried until the busy timeout.

        SQLite's busy handler covers most waits, but not all of those of a store being created
        by another process at the same instant (switching the journal to WAL, reading a WAL
        index being built return "database is locked" at once), so a locked store is retried
        with jittered sleeps for up to ``_BUSY_SECONDS``.
        """
        deadline = time.monotonic() + _BUSY_SECONDS
        self._conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_SECONDS * 1000)}")
        check = self.path.stat().st_size > 0  # a file just created holds nothing to check
        while True:
            try:
                if check:
                    self._check()
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as err:
                text = str(err).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(_JITTER.uniform(0.005, 0.05))

    def _check(self) -> None:
        """``PRAGMA quick_check`` before anything is written (raises sqlite3.DatabaseError)."""
        rows = self._conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise sqlite3.DatabaseError("; ".join(str(r[0]) for r in rows[:3]))

    def _damaged_message(self, err: Exception) -> str:
        return (f"the results store {str(self.path)!r} is damaged ({err}); nothing was written. "
                f"Move it aside (mv {self.path} {self.path}.damaged) and rerun to recompute its "
                f"cells, or try to salvage it with: sqlite3 {self.path} .recover")

    def close(self) -> None:
        """Close the database connection (the context manager calls it)."""
        self._conn.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def done(self, cell: Cell) -> bool:
        """Whether ``cell`` has a finished row."""
        row = self._conn.execute("SELECT 1 FROM cells WHERE key = ?", (cell.key,)).fetchone()
        return row is not None

    def put(self, cell: Cell, metrics: dict, *, steps: int, seconds: float,
            device: str = "cpu") -> None:
        """Write a finished cell in one transaction (replacing an older row of the same key)."""
        values = (cell.key, cell.kind, cell.system, cell.estimator, _dumps(cell.params),
                  int(cell.seed), _dumps(metrics), int(steps), float(seconds), library_version(),
                  str(device), time.strftime("%Y-%m-%dT%H:%M:%S"))
        with self._transaction():
            self._conn.execute("INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                               values)

    def get(self, cell: Cell) -> dict | None:
        """The stored row of ``cell`` as a dict, or None."""
        rows = self._select("WHERE key = ?", (cell.key,))
        return rows[0] if rows else None

    def rows(self, kind: str | None = None, **where: Any) -> list[dict]:
        """Finished rows, optionally filtered by kind and by column equality (system=...).

        Each row is a dict with the columns; ``params`` and ``metrics`` are decoded dicts.
        """
        clauses, args = [], []
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        for col, val in where.items():
            if col not in ("system", "estimator", "seed"):
                raise ValueError(f"cannot filter on {col!r}")
            clauses.append(f"{col} = ?")
            args.append(val)
        return self._select(("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(args))

    def kinds(self) -> list[str]:
        """The experiment kinds present in the store."""
        return [r[0] for r in self._conn.execute("SELECT DISTINCT kind FROM cells ORDER BY kind")]

    def log_run(self, argv: list[str], versions: dict | None = None) -> None:
        """Record a command line and the versions it ran with (shown in the report)."""
        versions = versions or environment()
        with self._transaction():
            self._conn.execute("INSERT INTO runs (command, versions, started) VALUES (?,?,?)",
                               (" ".join(argv), _dumps(versions), time.strftime("%Y-%m-%dT%H:%M:%S")))

    def runs(self) -> list[dict]:
        """Commands recorded by `log_run`, oldest first."""
        cur = self._conn.execute("SELECT command, versions, started FROM runs ORDER BY id")
        return [{"command": c, "versions": json.loads(v), "started": s} for c, v, s in cur]

    def _select(self, clause: str, args: tuple) -> list[dict]:
        cur = self._conn.execute(f"SELECT * FROM cells {clause} ORDER BY created, rowid", args)
        cols = [d[0] for d in cur.description]
        out = []
        for values in cur:
            row = dict(zip(cols, values))
            row["params"] = _decode(json.loads(row["params"]))
            row["metrics"] = _decode(json.loads(row["metrics"]))
            out.append(row)
        return out

    def _transaction(self):
        conn = self._conn

        class _Tx:
            def __enter__(self):
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *_):
                conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return _Tx()


def _damaged(err: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign file, as opposed to a locked or unwritable one."""
    if isinstance(err, sqlite3.OperationalError):
        text = str(err).lower()
        return "malformed" in text or "not a database" in text
    return True


def environment() -> dict:
    """Versions of Python, chaosgrad, torch and numpy, and the platform."""
    import numpy
    import torch
    return {"chaosgrad": library_version(), "python": sys.version.split()[0],
            "torch": torch.__version__, "numpy": numpy.__version__,
            "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
