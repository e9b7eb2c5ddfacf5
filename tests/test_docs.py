"""The documentation: public names have docstrings, tutorials run, the pages match the code.

* every name in the ``__all__`` of ``systems``, ``estimators``, ``experiments`` and their modules
  exists and has a docstring (classes, functions and the public methods of exported classes);
* every tutorial in ``docs/tutorials/*.py`` runs and prints a sensible result;
* every snippet a page includes exists, and every subcommand and option of ``chaosgrad`` is in
  ``docs/cli.md``;
* ``mkdocs build --strict`` passes when the ``docs`` extra is installed.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import math
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = DOCS / "tutorials"
PACKAGES = ("systems", "estimators", "experiments")


def _modules() -> list[str]:
    """The packages and every module below them."""
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, prefix=f"{pkg}.")
                  if not m.name.endswith(".__main__")]  # `python -m` entry points run on import
    return sorted(names)


def _auto_doc(obj: type) -> bool:
    """NamedTuple and dataclass docstrings written by Python (``Name(field, ...)``) are not docs."""
    return (obj.__doc__ or "").startswith(f"{obj.__name__}(")


def _has_doc(obj) -> bool:
    if inspect.isclass(obj) and _auto_doc(obj):
        return False
    return bool((inspect.getdoc(obj) or "").strip())


def undocumented(module_name: str) -> list[str]:
    """Names in ``module_name.__all__`` that are missing or have no docstring."""
    mod = importlib.import_module(module_name)
    missing = []
    for name in getattr(mod, "__all__", []):
        if not hasattr(mod, name):
            missing.append(f"{name} (in __all__ but not defined)")
            continue
        obj = getattr(mod, name)
        if not (inspect.isclass(obj) or inspect.ismodule(obj) or callable(obj)):
            continue  # constants carry no docstring of their own
        if not _has_doc(obj):
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            if isinstance(value, property):
                documented = bool((value.__doc__ or "").strip())
            elif inspect.isfunction(getattr(value, "__func__", value)):
                documented = bool((inspect.getdoc(getattr(obj, attr)) or "").strip())
            else:
                continue  # fields and class attributes
            if not documented:
                missing.append(f"{name}.{attr}")
    return missing


@pytest.mark.parametrize("module_name", _modules())
def test_public_names_have_docstrings(module_name):
    mod = importlib.import_module(module_name)
    if module_name == "experiments" or (module_name.startswith("experiments.")
                                        and not hasattr(mod, "__all__")):
        pytest.skip("experiments scripts without __all__ export nothing")
    assert (mod.__doc__ or "").strip(), f"module {module_name} has no docstring"
    missing = undocumented(module_name)
    assert not missing, f"{module_name}: public names without a docstring: {', '.join(missing)}"


def test_docstring_check_catches_a_missing_docstring(tmp_path, monkeypatch):
    (tmp_path / "undocumented_mod.py").write_text(
        '"""A module."""\nfrom typing import NamedTuple\n__all__ = ["f", "S", "C", "gone"]\n'
        "def f():\n    pass\nclass S(NamedTuple):\n    x: int\n"
        'class C:\n    """C."""\n    def m(self):\n        pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert undocumented("undocumented_mod") == ["f", "S", "C.m", "gone (in __all__ but not defined)"]


# ----------------------------------------------------------------------------- tutorials
def run_tutorial(name: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(TUTORIALS / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_tutorial_own_system():
    out = run_tutorial("own_system.py")
    assert "=> differentiable" in out and "[failed" not in out
    lam = float(re.search(r"leading Lyapunov exponent (\S+)", out).group(1))
    assert lam > 0.2, out  # the Ricker map at r = 3 is chaotic
    grads = dict(re.findall(r"^(bptt|pes)\s+grad \S+\s+variance (\S+)", out, re.M))
    assert float(grads["bptt"]) > 1e6 * float(grads["pes"]), out
    rec = re.search(r"^recommended: \{'estimator': '(\w+)'", out, re.M)
    assert rec and rec.group(1) in ("antithetic_es", "pes", "nres"), out


def test_tutorial_meta_learning():
    out = run_tutorial("meta_learning.py")
    optimum = float(re.search(r"optimum (\S+)", out).group(1))
    pes = float(re.search(r"PES \(K = 10\)\s+theta (\S+)", out).group(1))
    tbptt = float(re.search(r"TruncatedBPTT \(K = 10\)\s+theta (\S+)", out).group(1))
    assert abs(optimum - (-0.1465)) < 1e-3
    assert abs(pes - optimum) < 0.01, out         # PES reaches the long-horizon optimum
    assert tbptt > 0.5, out                       # truncated BPTT moves away from it


def test_tutorial_lopt_autograd():
    out = run_tutorial("lopt_autograd.py")
    before, after, drop, se = (float(v) for v in re.search(
        r"before (\S+) after (\S+)\s+drop (\S+) \+- (\S+)", out).groups())
    assert after < before and drop > 4 * se, out
    assert float(re.findall(r"lr scale (\S+)", out)[-1]) > 1.5, out


def test_tutorial_compare(tmp_path):
    out = run_tutorial("compare.py", str(tmp_path))
    rows = {m: (float(a), float(b)) for m, a, b in
            re.findall(r"^(\w+)\s+L\(theta\): start (\S+) -> final (\S+)", out, re.M)}
    assert set(rows) == {"bptt", "pes", "cmaes"}, out
    assert all(math.isfinite(b) for _, b in rows.values()), out
    # every method starts from the same theta on the same evaluation episodes; two seeds of this
    # tiny budget do not rank the methods (the page says so), but the run does learn something
    assert len({start for start, _ in rows.values()}) == 1, out
    assert min(final for _, final in rows.values()) < 0.9 * rows["pes"][0], out
    assert (tmp_path / "figures" / "compare_metz_sgd_momentum_steps.png").is_file()
    assert (tmp_path / "results.sqlite").is_file()


# ----------------------------------------------------------------------------- pages
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"', re.M)


def test_included_snippets_exist():
    pages = sorted(DOCS.rglob("*.md"))
    found = 0
    for page in pages:
        for path, section in SNIPPET.findall(page.read_text()):
            source = TUTORIALS / path
            assert source.is_file(), f"{page.name} includes missing {path}"
            if section:
                text = source.read_text()
                for mark in ("start", "end"):
                    assert f"# --8<-- [{mark}:{section}]" in text, f"{path} has no {mark}:{section}"
            found += 1
    assert found >= 6
    for tutorial in TUTORIALS.glob("*.py"):
        assert (TUTORIALS / f"{tutorial.stem}.md").is_file(), f"no page for {tutorial.name}"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from experiments.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_cli_reference_lists_every_subcommand_and_option():
    text = (DOCS / "cli.md").read_text()
    missing = []
    for command, parser in _subcommands().items():
        if f"## {command}" not in text and f"`{command}`" not in text:
            missing.append(command)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            if not any(f"`{n}" in text for n in names):
                missing.append(f"{command} {names[0]}")
    assert not missing, f"docs/cli.md does not mention: {', '.join(missing)}"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("pymdownx")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "api" / "estimators" / "index.html").is_file()
