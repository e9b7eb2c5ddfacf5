"""The self-contained HTML report of a results directory (``chaosgrad report DIR``).

`build_report(directory)` writes ``DIR/report.html`` with the commands and versions recorded by
`ResultsStore.log_run`, every figure of ``DIR/figures`` (PNG embedded as base64, grouped by name
prefix: ``curves_...``, ``fig1_...``; each with its caption from ``<name>.txt`` and a link to its
data ``<name>.csv``), the tables that commands registered for their experiment kinds, and a
generic table for every other kind in the store.

A command adds its own part with `register_section` when its module is imported (the CLI imports
every command); the report knows no command by name:

    register_section(Section(kinds=("curves", "curves_reference"), tables=curves_tables,
                             figures="curves", figure_order=("_horizon", "_truncation", "_cost")))
"""
from __future__ import annotations

import base64
import html
import math
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, NamedTuple

from .store import STORE_FILE, ResultsStore, library_version

__all__ = ["build_report", "Section", "register_section", "SECTIONS", "html_table", "REPORT_FILE"]

REPORT_FILE = "report.html"
_MAX_ROWS = 400  # rows shown per generic table (the store has them all)

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
code, pre { background: #f6f6f6; padding: 1px 4px; font-size: 0.85em; white-space: pre-wrap; }
.muted { color: #777; font-size: 0.85em; }
"""


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.3g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in x[:6]) + (", ..." if len(x) > 6 else "") + "]"
    return str(x)


def html_table(headers: list[str], rows: list[list], left: int = 0) -> str:
    """An HTML table of ``rows`` (values formatted to 3 significant digits, escaped); the first
    ``left`` columns are left-aligned (names)."""
    def cell(tag, i, v):
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{html.escape(_fmt(v))}</{tag}>"
    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "\n".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>"
                     for r in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>"


class Section(NamedTuple):
    """What a command adds to the report.

    Attributes:
        kinds: the store kinds its tables cover (the generic tables skip them).
        tables: ``tables(store) -> HTML`` of its tables ("" when the store has none of its rows).
        figures: the name prefix of its figures (``"curves"``); registered prefixes are shown
            before the others, in registration order.
        figure_order: stem suffixes in the order their figures are shown within a group.
    """

    kinds: tuple[str, ...]
    tables: Callable[[ResultsStore], str]
    figures: str = ""
    figure_order: tuple[str, ...] = ()


SECTIONS: list[Section] = []


def register_section(section: Section) -> Section:
    """Add ``section`` to every report built from now on (once; returns it)."""
    if section not in SECTIONS:
        SECTIONS.append(section)
    return section


def _figure_order(png: Path, suffixes: tuple[str, ...]) -> tuple:
    ranks = [i for i, suffix in enumerate(suffixes) if png.stem.endswith(suffix)]
    return (png.stem.rsplit("_", 1)[0], ranks[0] if ranks else len(suffixes), png.stem)


def _figure(png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    txt = png.with_suffix(".txt")
    caption = html.escape(txt.read_text().strip()) if txt.exists() else ""
    csv = png.with_suffix(".csv")
    link = f' <a href="figures/{html.escape(csv.name)}">data (CSV)</a>' if csv.exists() else ""
    stem = html.escape(png.stem)
    return (f'<figure id="{stem}"><img alt="{stem}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{stem}</b>. {caption}{link}</figcaption></figure>")


def _figures(directory: Path) -> str:
    figdir = directory / "figures"
    pngs = sorted(figdir.glob("*.png")) if figdir.is_dir() else []
    if not pngs:
        return "<p class='muted'>No figures in this directory yet.</p>"
    groups = defaultdict(list)
    for png in pngs:
        groups[png.stem.split("_")[0]].append(png)
    claimed = {s.figures: s.figure_order for s in SECTIONS if s.figures}
    first = list(claimed)
    parts = []
    for prefix in sorted(groups, key=lambda p: (first.index(p) if p in first else len(first), p)):
        parts.append(f"<h3>{html.escape(prefix)}</h3>")
        order = claimed.get(prefix, ())
        parts += [_figure(png) for png in sorted(groups[prefix],
                                                 key=lambda png: _figure_order(png, order))]
    return "\n".join(parts)


def _scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _generic_tables(store: ResultsStore, skip: set[str]) -> str:
    parts = []
    for kind in store.kinds():
        if kind in skip:
            continue
        rows = store.rows(kind)
        pkeys = list(dict.fromkeys(k for r in rows for k, v in r["params"].items() if _scalar(v)))
        mkeys = list(dict.fromkeys(k for r in rows for k, v in r["metrics"].items() if _scalar(v)))
        headers = ["system", "estimator", "seed", *pkeys, *mkeys, "steps", "seconds", "device"]
        body = [[r["system"], r["estimator"], r["seed"], *[r["params"].get(k) for k in pkeys],
                 *[r["metrics"].get(k) for k in mkeys], r["steps"], r["seconds"], r["device"]]
                for r in rows[:_MAX_ROWS]]
        more = (f"<p class='muted'>first {_MAX_ROWS} of {len(rows)} rows</p>"
                if len(rows) > _MAX_ROWS else "")
        parts.append(f"<h2>{html.escape(kind)}</h2>{html_table(headers, body, left=2)}{more}")
    return "\n".join(parts)


def _runs(store: ResultsStore) -> str:
    runs = store.runs()
    if not runs:
        return "<p class='muted'>No command recorded.</p>"
    items = []
    for r in runs:
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v is not None)
        items.append(f"<li><code>{html.escape(r['command'])}</code> <span class='muted'>"
                     f"({html.escape(r['started'])}; {html.escape(versions)})</span></li>")
    return "<ol>" + "\n".join(items) + "</ol>"


def build_report(directory: str | Path) -> Path:
    """Write ``directory/report.html`` (self-contained) and return its path.

    Raises:
        ValueError: when ``directory`` holds no results store.
    """
    directory = Path(directory)
    if not (directory / STORE_FILE).is_file():
        raise ValueError(f"{str(directory)!r} is not a results directory (no {STORE_FILE}); "
                         "run `chaosgrad curves` or `chaosgrad reproduce` first")
    with ResultsStore(directory) as store:
        n_cells = sum(len(store.rows(k)) for k in store.kinds())
        body = [f"<h1>chaosgrad results: {html.escape(str(directory.resolve()))}</h1>",
                f"<p class='muted'>Built {time.strftime('%Y-%m-%d %H:%M:%S')} by chaosgrad "
                f"{html.escape(library_version())} from {n_cells} cells of "
                f"<code>{STORE_FILE}</code>. Rebuild with <code>chaosgrad report "
                f"{html.escape(str(directory))}</code>.</p>",
                "<h2>Commands and versions</h2>", _runs(store),
                "<h2>Figures</h2>", _figures(directory),
                *(section.tables(store) for section in SECTIONS),
                _generic_tables(store, skip={k for s in SECTIONS for k in s.kinds})]
    text = ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>chaosgrad report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = directory / REPORT_FILE
    # a temporary file of this build's own (two sweeps may finish together in one directory),
    # then an atomic rename: a reader sees the old report or the new one, never half of one
    fd, tmp = tempfile.mkstemp(prefix=f".{REPORT_FILE}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise ValueError(f"cannot write {str(path)!r}: {err.strerror or err}") from None
    return path
