"""The results store and the resumable sweep runner: resume, new settings, kill -9 part-way."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest

from experiments.core.store import STORE_FILE, Cell, ResultsStore
from experiments.core.sweep import CellResult, run_cells

ROOT = Path(__file__).resolve().parents[3]


def grid(n: int, sigma: float = 0.1) -> list[Cell]:
    return [Cell("test", "logistic_map", "pes", {"T": 10 * (i + 1), "sigma": sigma}, seed=i)
            for i in range(n)]


class Counter:
    def __init__(self):
        self.seen = []

    def __call__(self, cell: Cell) -> CellResult:
        self.seen.append(cell.key)
        return CellResult({"value": cell.params["T"] * cell.params["sigma"], "nan": float("nan")},
                          steps=cell.params["T"])


def run(directory, cells, compute):
    with ResultsStore(directory) as store:
        return run_cells(store, cells, compute)


def test_cells_round_trip_with_non_finite_metrics(tmp_path):
    with ResultsStore(tmp_path) as store:
        cell = grid(1)[0]
        store.put(cell, {"bias2": float("inf"), "grad": [1.0, float("nan")]}, steps=3, seconds=0.5)
        row = store.get(cell)
        assert store.done(cell) and not store.done(grid(2)[1])
    assert row["metrics"]["bias2"] == float("inf") and row["metrics"]["grad"][0] == 1.0
    assert row["params"] == cell.params and row["steps"] == 3 and row["version"]


def test_rerun_skips_finished_cells(tmp_path):
    first, again = Counter(), Counter()
    rows = run(tmp_path, grid(6), first)
    assert len(first.seen) == 6 and [r["metrics"]["value"] for r in rows] == [
        pytest.approx(10 * (i + 1) * 0.1) for i in range(6)]
    rows_again = run(tmp_path, grid(6), again)
    assert again.seen == []
    assert [r["key"] for r in rows_again] == [r["key"] for r in rows]


def test_changed_settings_compute_only_new_cells(tmp_path):
    run(tmp_path, grid(4), Counter())
    more, other_sigma = Counter(), Counter()
    run(tmp_path, grid(6), more)                          # two more cells
    assert more.seen == [c.key for c in grid(6)[4:]]
    run(tmp_path, grid(6, sigma=0.2), other_sigma)
    assert len(other_sigma.seen) == 6                                         # all new keys
    with ResultsStore(tmp_path) as store:
        assert len(store.rows("test")) == 12


def test_duplicate_cells_are_computed_once(tmp_path):
    counter = Counter()
    cells = grid(3) + grid(3)
    rows = run(tmp_path, cells, counter)
    assert len(counter.seen) == 3 and len(rows) == 6


def test_unwritable_directory_is_a_value_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="cannot write results"):
        ResultsStore(blocker / "sub")


SWEEP = textwrap.dedent("""
    import sys, time
    from experiments.core.store import Cell, ResultsStore
    from experiments.core.sweep import CellResult, run_cells

    def compute(cell):
        print("computing", cell.key, flush=True)
        time.sleep(float(sys.argv[2]))
        return CellResult({"T": cell.params["T"], "payload": list(range(200))},
                          steps=cell.params["T"])

    cells = [Cell("kill", "logistic_map", "bptt", {"T": t}, seed=0) for t in range(1, 21)]
    run_cells(ResultsStore(sys.argv[1]), cells, compute)
    print("finished", flush=True)
""")


def _sweep(directory: Path, sleep: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", SWEEP, str(directory), str(sleep)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finished(directory: Path) -> int:
    if not (directory / STORE_FILE).exists():
        return 0
    try:
        with closing(sqlite3.connect(directory / STORE_FILE, timeout=5)) as conn:
            return conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # the table is being created
        return 0


def test_sigkill_part_way_then_rerun_loses_and_duplicates_nothing(tmp_path):
    proc = _sweep(tmp_path, 0.15)
    deadline = time.time() + 60
    while _finished(tmp_path) < 5 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)          # no cleanup, mid-cell
    proc.communicate(timeout=30)
    done_before = _finished(tmp_path)
    assert 5 <= done_before < 20, "the sweep should have been killed part-way"

    rerun = _sweep(tmp_path, 0.0)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    computed = [line.split()[1] for line in out.splitlines() if line.startswith("computing")]

    with closing(sqlite3.connect(tmp_path / STORE_FILE)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = [k for (k,) in conn.execute("SELECT key FROM cells WHERE kind = 'kill'")]
        metrics = [json.loads(m) for (m,) in conn.execute("SELECT metrics FROM cells")]
    assert len(keys) == len(set(keys)) == 20                 # nothing lost, nothing duplicated
    assert len(computed) == 20 - done_before                 # finished cells were not redone
    assert all(m["payload"] == list(range(200)) for m in metrics)   # no half-written row
    assert sorted(m["T"] for m in metrics) == list(range(1, 21))


# --- a damaged file, concurrent creation, versioned keys, report builds ----------------------

def _damage(path: Path) -> None:
    """8 KiB of garbage in the middle of the file (what the issue's probe did)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8192] = bytes((i * 37 + 11) % 256 for i in range(8192))
    path.write_bytes(bytes(data))


def _filled_store(directory: Path) -> Path:
    with ResultsStore(directory) as store:
        for i in range(400):
            store.put(Cell("fill", "logistic_map", "bptt", {"i": i, "pad": "x" * 200}),
                      {"v": list(range(50))}, steps=1, seconds=0.0)
    for extra in ("-wal", "-shm"):
        (directory / (STORE_FILE + extra)).unlink(missing_ok=True)
    return directory / STORE_FILE


def test_a_damaged_store_is_one_error_naming_the_file_before_anything_is_written(tmp_path):
    path = _filled_store(tmp_path)
    _damage(path)
    before = path.read_bytes()
    with pytest.raises(ValueError) as info:
        ResultsStore(tmp_path)
    message = str(info.value)
    assert "damaged" in message and str(path) in message and ".recover" in message
    assert "\n" not in message
    assert path.read_bytes() == before                       # nothing written into it


def test_a_damaged_store_through_the_cli_is_exit_2_without_a_traceback(tmp_path):
    _damage(_filled_store(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", "report", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "damaged" in proc.stderr


CREATE = textwrap.dedent("""
    import importlib.util, sys, time
    # store.py alone (stdlib only), so that many processes start fast
    spec = importlib.util.spec_from_file_location("store", sys.argv[4])
    store_module = sys.modules["store"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(store_module)
    Cell, ResultsStore = store_module.Cell, store_module.ResultsStore
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    with ResultsStore(sys.argv[1]) as store:
        store.put(Cell("race", "logistic_map", params={"who": sys.argv[3]}), {}, steps=0,
                  seconds=0.0)
""")


def test_processes_creating_one_fresh_store_at_once_all_succeed(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    source = ROOT / "experiments" / "core" / "store.py"
    for attempt in range(15):  # some failed at once with "database is locked" before
        directory = tmp_path / f"fresh{attempt}"
        start = time.time() + 0.3
        procs = [subprocess.Popen([sys.executable, "-c", CREATE, str(directory), str(start),
                                   str(who), str(source)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for who in range(4)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        with ResultsStore(directory) as store:
            assert len(store.rows("race")) == 4


def test_cell_keys_carry_the_metric_version(monkeypatch, tmp_path):
    import experiments.core.store as store_module
    cell = Cell("curves", "logistic_map", "pes", {"T": 8}, seed=0)
    with ResultsStore(tmp_path) as store:
        store.put(cell, {"mse": 1.0}, steps=1, seconds=0.0)
        assert store.done(cell)
        assert not store.done(Cell("curves", "logistic_map", "pes", {"T": 8}, 0, version=2))
        monkeypatch.setattr(store_module, "METRICS_VERSION", store_module.METRICS_VERSION + 1)
        assert not store.done(cell)                           # stale: recomputed, not reused


def test_concurrent_report_builds_use_their_own_temporary_files(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from experiments.core.report import build_report
    with ResultsStore(tmp_path) as store:
        store.put(Cell("any", "logistic_map"), {"x": 1}, steps=0, seconds=0.0)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: build_report(tmp_path), range(16)))
    assert all(p == tmp_path / "report.html" for p in paths)
    assert (tmp_path / "report.html").read_text().endswith("</html>\n")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_user_systems_cell_key_follows_its_source_file(tmp_path):
    from experiments.core.store import Cell
    user = tmp_path / "mine.py"
    user.write_text("X = 1\n")
    cell = Cell("curves", f"{user}:X", "pes", {"T": 10}, 0)
    first = cell.key
    assert cell.key == first                      # unchanged file: same key, cells reused
    user.write_text("X = 2\n")
    assert cell.key != first                      # edited file: a new cell, recomputed
    user.unlink()
    assert len(cell.key) == 32                    # a vanished file leaves the plain identity
    import hashlib

    from experiments.core.store import METRICS_VERSION, _dumps
    registered = Cell("curves", "logistic_map", "pes", {"T": 10}, 0)   # no source in its key
    identity = ["curves", "logistic_map", "pes", {"T": 10}, 0,
                f"metrics-{METRICS_VERSION}.{registered.version}"]
    assert registered.key == hashlib.sha256(_dumps(identity).encode()).hexdigest()[:32]
