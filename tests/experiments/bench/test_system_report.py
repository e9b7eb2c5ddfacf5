"""Smoke test of experiments/bench/system_report.py at its quick setting."""
from experiments.bench.system_report import QUICK, Config, format_table, run


def test_quick_report_on_the_logistic_map():
    cfg = Config(systems=("logistic_map",), **QUICK)
    rows = run(cfg)
    assert [r.regime for r in rows] == ["regular", "chaotic"]
    regular, chaotic = rows
    # r = 3.2: attracting 2-cycle, lambda = ln(0.16) / 2 < 0 (exact value: test_diagnostics;
    # the quick burn-in is too short to reach the cycle to many digits); r = 3.9: chaotic
    assert regular.lambda_step < 0 < chaotic.lambda_step and regular.lambda_time is None
    used, std, nonfinite = chaotic.grad_std[100]
    assert used == 100 and nonfinite == 0 and std > 1e6 * regular.grad_std[100][1]
    table = format_table(rows, cfg)
    assert "logistic_map" in table and "chaotic (r=3.9)" in table
