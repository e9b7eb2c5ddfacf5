"""Shared plotting helpers: user text is safe as matplotlib text, readable figure names, every
curve that leaves a clipped axis is named, point labels do not overlap."""
import math

import matplotlib
import pytest

from experiments.core.plotting import file_stem, label_points, new_figure, off_scale, text

matplotlib.use("Agg")


@pytest.mark.parametrize("name", ["cost$a$^{x}_", "x$^$y", "$\\frac$", "back\\slash_$"])
def test_user_names_with_mathtext_characters_render(name, tmp_path):
    fig, axes = new_figure(1, 1, 3, 2)
    axes[0][0].set_title(f"{text(name)}: MSE of $\\nabla L_\\sigma$")
    fig.savefig(tmp_path / "f.png")                                 # a raw name fails here
    with pytest.raises(ValueError):
        bad, ax = new_figure(1, 1, 3, 2)
        ax[0][0].set_title("$\\frac$ and x$^$y")
        bad.savefig(tmp_path / "g.png")


def test_figure_names_are_readable():
    assert file_stem("advise", "/a/b/henon.py:Henon", "chaotic", "mse") == \
        "advise_henon_Henon_chaotic_mse"
    assert file_stem("curves", "logistic_map", "cost") == "curves_logistic_map_cost"
    assert file_stem("advise", "my$sys tem", "", "mse") == "advise_my_sys_tem_mse"


def test_off_scale_names_every_curve_that_leaves_the_axis():
    fig, axes = new_figure(1, 1, 4, 3)
    ax = axes[0][0]
    ax.set_yscale("log")
    ax.plot([1, 2, 3], [1e20, 1e22, 1e25])
    ax.plot([1, 2, 3], [1e-2, 1e3, 1e9])
    ax.plot([1, 2, 3], [1e-3, 1e-2, 1e-1])
    off = off_scale(ax, 1e4, {"BPTT": [1e20, 1e22, 1e25], "TruncatedBPTT": [1e-2, 1e3, 1e9],
                              "PES": [1e-3, 1e-2, 1e-1]})
    assert off == ["BPTT", "TruncatedBPTT"]
    note = ax.texts[-1].get_text()
    assert "BPTT (MSE" in note and "TruncatedBPTT (1 of 3 points, up to 1e+09)" in note
    assert ax.get_ylim()[1] == 1e4


def test_point_labels_do_not_overlap():
    fig, axes = new_figure(1, 1, 4, 3, layout=None)
    ax = axes[0][0]
    ax.set_xscale("log")
    ax.set_yscale("log")
    points = [(1e-3 * (1 + 0.01 * i), 1e-2 * (1 + 0.01 * i), f"K={2 ** i}", "C0")
              for i in range(6)]  # six labels at almost the same place
    ax.plot([p[0] for p in points], [p[1] for p in points])
    ax.set_xlim(1e-4, 1e-2)
    ax.set_ylim(1e-3, 1e-1)
    artists = label_points(ax, points)
    assert len(artists) >= 4
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in artists]
    for i, b in enumerate(boxes):
        for c in boxes[i + 1:]:
            overlap_x = min(b.x1, c.x1) - max(b.x0, c.x0)
            overlap_y = min(b.y1, c.y1) - max(b.y0, c.y0)
            assert overlap_x <= 1 or overlap_y <= 1, (b, c)
    assert math.isfinite(boxes[0].x0)
