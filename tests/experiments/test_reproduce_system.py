"""``chaosgrad reproduce fig1 fig4 --system NAME [--regime ...] [--set ...]``: a user's system
in the figures whose system can be swapped, through the one core resolver; fixed figures
reject it in one line; a user's file's contents are part of its cells' keys."""
import sys

import pytest

from experiments.core.resolve import source_digest
from experiments.core.store import ResultsStore
from experiments.reproduce import fig1, fig4

from .test_user_systems import chaosgrad, in_process, one_line_error, user_dir  # noqa: F401

TINY = ["--quick", "--set", "horizon=10", "--device", "cpu"]


def _rows(directory):
    with ResultsStore(directory) as store:
        return store.rows()


def test_fig1_and_fig4_run_on_a_user_file_through_the_cli(user_dir):  # noqa: F811
    code, out, err = chaosgrad(["reproduce", "fig1", "fig4", "--system", "henon.py:Henon",
                                "--regime", "regular", "chaotic", *TINY, "--out", "r"], user_dir)
    assert code == 0 and "Traceback" not in err, err
    rows = _rows(user_dir / "r")
    kinds = {r["kind"] for r in rows if r["system"] == "henon.py:Henon"}
    assert kinds == {"fig1_slice", "fig1_variance", "fig4_eigenvalues", "fig4_lyapunov",
                     "fig4_growth"}
    assert all(r["system"] == "henon.py:Henon" for r in rows)
    assert {r["params"]["regime"] for r in rows if r["kind"] == "fig1_variance"} == {
        "regular", "chaotic"}
    digest = source_digest(str(user_dir / "henon.py") + ":Henon")
    assert all(r["params"]["set"] == {"horizon": 10} and r["params"]["source"] == digest
               for r in rows)
    assert max(r["params"]["T"] for r in rows if r["kind"] == "fig1_variance") == 10
    for name in ("fig1_gradient_variance", "fig4_lyapunov_vs_growth"):
        assert (user_dir / "r" / "figures" / f"{name}.png").exists()


def test_editing_the_users_file_recomputes_its_cells(user_dir, capsys, monkeypatch):  # noqa: F811
    argv = ["reproduce", "fig4", "--system", "henon.py:Henon", *TINY, "--out", "r"]
    assert in_process(argv, user_dir, capsys, monkeypatch)[0] == 0
    first = {r["key"] for r in _rows(user_dir / "r")}
    code, _, err = in_process(argv, user_dir, capsys, monkeypatch)
    assert code == 0 and "0 computed now" in err, err
    path = user_dir / "henon.py"
    path.write_text(path.read_text().replace("noise_std=0.001", "noise_std=0.002"))
    code, _, err = in_process(argv, user_dir, capsys, monkeypatch)
    assert code == 0 and f"{len(first)} cells, {len(first)} computed now" in err, err
    assert len({r["key"] for r in _rows(user_dir / "r")} - first) == len(first)


def test_module_targets_hash_their_module_file(user_dir, monkeypatch):  # noqa: F811
    monkeypatch.syspath_prepend(str(user_dir))
    for name in ("mypkg", "mypkg.dyn"):  # another test's mypkg, from its own tmp dir
        monkeypatch.delitem(sys.modules, name, raising=False)
    before = source_digest("mypkg.dyn:Henon")
    assert before == source_digest(str(user_dir / "henon.py") + ":Henon")  # same contents
    (user_dir / "mypkg" / "dyn.py").write_text((user_dir / "henon.py").read_text() + "\n# x\n")
    assert source_digest("mypkg.dyn:Henon") != before
    assert source_digest("logistic_map") == ""


@pytest.mark.parametrize("argv, words", [
    (["fig2", "--system", "henon.py:Henon"], ["fig2", "fixed systems", "fig1, fig4"]),
    (["all", "--system", "henon.py:Henon"], ["fig2, fig3", "fixed systems"]),
    (["fig1", "--set", "a=1.2"], ["--regime/--set apply to --system"]),
    (["fig1", "--system", "henon.py:Henon", "--regime", "turbulent"],
     ["unknown regime 'turbulent'", "regular, chaotic"]),
])
def test_bad_system_options_are_one_line_and_leave_no_out(user_dir, capsys,  # noqa: F811
                                                          monkeypatch, argv, words):
    code, _, err = in_process(["reproduce", *argv, "--out", "bad"], user_dir, capsys, monkeypatch)
    one_line_error(code, err, *words)
    assert not (user_dir / "bad").exists()


def test_the_paper_cells_carry_no_system_params():
    for module, config in ((fig1, fig1.Fig1Config), (fig4, fig4.Fig4Config)):
        for cell in module.cells(config.quick()):
            assert "set" not in cell.params and "source" not in cell.params
