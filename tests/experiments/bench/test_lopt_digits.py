"""``python -m experiments.bench.lopt_digits`` at smoke sizes: every row is measured and printed
(timings are never asserted; the compiled rows are left to the benchmark run itself)."""
import pytest

pytest.importorskip("sklearn")

from experiments.bench import lopt_digits as bench  # noqa: E402


def test_table_has_a_row_per_batch_and_the_pes_cost(capsys):
    argv = ["--B", "2", "3", "--steps", "2", "--T", "8", "--K", "2", "--pairs", "2",
            "--threads", "1", "--no-compile"]
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.strip() and line.split()[0] in ("2", "3")]
    assert [r[0] for r in rows] == ["2", "3"] and all(float(r[1]) > 0 for r in rows)
    pes = [line for line in lines if line.startswith("PES estimate")]
    assert len(pes) == 1 and "(8 trajectory-steps)" in pes[0]
