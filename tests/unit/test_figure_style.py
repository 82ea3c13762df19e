"""How the report's figures draw (issue 21): no line through fewer than 3 points, error
bars from the seeds, readable names from one map, a colour-blind-safe palette."""

from __future__ import annotations

from matplotlib.figure import Figure

from poisonlab.harness.report.figures import _COLORS, MIN_CURVE_POINTS, _band
from poisonlab.harness.report.view import DISPLAY_NAMES, display, plural


def stat(m: float, s: float = 0.02, n: int = 3) -> dict[str, float]:
    return {"mean": m, "std": s, "n": n}


def drawn(n_points: int, n_seeds: int = 3):  # type: ignore[no-untyped-def]
    ax = Figure().subplots()
    xs = [0.1 * i for i in range(n_points)]
    _band(ax, xs, [stat(0.9 - 0.1 * i, n=n_seeds) for i in range(n_points)],
          "label_smoothing(eps=0.1)", _COLORS[0])
    return ax


def test_two_points_are_markers_with_error_bars_not_a_line() -> None:
    ax = drawn(2)
    (bars,) = ax.containers
    line = bars.lines[0]  # the data line of the error bars
    assert line.get_linestyle() == "None" and line.get_marker() == "o"
    assert bars.has_yerr  # the seed spread
    assert all(x.get_linestyle() == "None" for x in ax.lines)  # no line between points
    assert not ax.collections[1:]  # no band
    assert ax.get_legend_handles_labels()[1] == ["label smoothing (eps=0.1)"]


def test_three_points_are_a_curve_with_a_band() -> None:
    ax = drawn(MIN_CURVE_POINTS)
    (line,) = ax.lines
    assert line.get_linestyle() == "-" and len(line.get_xdata()) == 3
    assert len(ax.collections) == 1  # the std band


def test_a_single_seed_has_no_error_bar() -> None:
    ax = drawn(2, n_seeds=1)
    segments = ax.containers[0].lines[2][0].get_segments()
    assert all(seg[0][1] == seg[1][1] for seg in segments)  # zero-length bars


def test_the_palette_is_okabe_ito_and_names_come_from_one_map() -> None:
    assert _COLORS[:3] == ["#0072B2", "#D55E00", "#009E73"]
    assert display("none") == DISPLAY_NAMES["none"] == "no defense"
    assert display("pgd(steps=40)") == "PGD (steps=40)"
    assert plural(1, "seed") == "1 seed" and plural(3, "seed") == "3 seeds"
