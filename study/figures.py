"""Our own figures: pure "info" functions over trial records, then thin plotly renderers.

As in `optuna/visualization/_contour.py`, `article_info(records)` computes everything
the figure shows (a NamedTuple, tested as data) and `article_figure(info)` only draws
it. plotly is imported inside the renderers, so the info functions and their tests
never load it.

Diverged cells are outcomes, not numbers: they never get a colour or a y value; the
heat maps hatch and label them, the article chart leaves a gap and names them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

import numpy as np

from study import critical as C
from study import records as R
from study import scaling as S
from study.analysis import (
    BOOTSTRAP_WORDS,
    GridCell,
    Interval,
    TrialRecord,
    bootstrap_interval,
    format_value,
    grid,
    metric_of,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Short names for axes and colour bars; page captions say more.
OBJECTIVE_LABELS = S.OBJECTIVE_LABELS
METRIC_LABELS = {"objective": "objective", "train_loss": "final training loss",
                 "val_loss": "validation loss", "full_train_loss": "full training-set loss",
                 "train_accuracy": "final training accuracy",
                 "val_accuracy": "validation accuracy",
                 "gap": "generalization gap (validation - training)",
                 R.SHARPNESS: "sharpness (top Hessian eigenvalue)"}

# Plotly's default qualitative palette, fixed here so a learning rate keeps its colour
# between the line, its band and its single runs.
PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
           "#b6e880", "#ff97ff", "#fecb52")


def objective_label(objective: str) -> str:
    return OBJECTIVE_LABELS.get(objective, objective)


def final_words(label: str) -> str:
    """"Final loss" for a loss; "Final validation error" for what is not one."""
    return "Final loss" if "loss" in label or label == "objective" else f"Final {label}"


# --------------------------------------------------------------------------- article chart


class ArticlePoint(NamedTuple):
    batch_size: int
    interval: Interval | None  # None: no completed run in this cell
    runs: tuple[float, ...]  # every completed run (one per seed)
    diverged: int  # runs of this cell that diverged


class ArticleLine(NamedTuple):
    learning_rate: float
    points: tuple[ArticlePoint, ...]  # one per batch size of the grid, ascending


class ArticleInfo(NamedTuple):
    y_label: str
    batch_sizes: tuple[int, ...]
    lines: tuple[ArticleLine, ...]  # learning rates descending, as the article lists them
    repeats: bool  # some cell has several runs: draw the interval band and the single runs
    floor: float | None  # a positive y below every drawn value, where bands reaching <= 0 stop
    diverged: tuple[tuple[float, int, int], ...]  # (learning rate, batch size, runs) with no loss
    partly: tuple[tuple[float, int, int, int], ...]  # (lr, batch size, diverged, runs) of the rest


def article_info(records: Iterable[TrialRecord], y_label: str, metric: str = "objective"
                 ) -> ArticleInfo:
    """The article's chart as data: final loss against batch size, one line per learning rate.

    With repeats, each point is the mean over seeds with its 95% bootstrap interval.
    """
    g = grid(records, metric)
    lines = []
    diverged = []
    partly = []
    positives: list[float] = []
    repeats = False
    for lr in g.learning_rates:
        points = []
        for b in g.batch_sizes:
            cell = g.cell(b, lr)
            values = cell.values if cell is not None else ()
            n_div = cell.diverged if cell is not None else 0
            interval = bootstrap_interval(values)
            points.append(ArticlePoint(b, interval, tuple(values), n_div))
            repeats = repeats or len(values) > 1
            positives += [v for v in values if v > 0]
            if interval is not None:
                positives += [x for x in (interval.mean, interval.low) if x is not None and x > 0]
            if not values and n_div:
                diverged.append((lr, b, n_div))
            elif n_div:
                partly.append((lr, b, n_div, n_div + len(values)))
        lines.append(ArticleLine(lr, tuple(points)))
    floor = min(positives) / 2 if positives else None
    return ArticleInfo(y_label, g.batch_sizes, tuple(lines), repeats, floor, tuple(diverged),
                       tuple(partly))


class _WithInterval(Protocol):
    @property
    def interval(self) -> Interval | None: ...


_P = TypeVar("_P", bound=_WithInterval)


def _segments(points: Sequence[_P]) -> list[list[_P]]:
    """Runs of adjacent points that all have an interval: a band must not bridge a gap."""
    out: list[list[_P]] = []
    current: list[_P] = []
    for p in points:
        if p.interval is not None and p.interval.low is not None:
            current.append(p)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def _mean_hover(lr: float, p: ArticlePoint) -> str:
    head = f"lr={lr:g}, batch size {p.batch_size}"
    if p.interval is None:
        return f"{head}: diverged" if p.diverged else f"{head}: no result"
    i = p.interval
    text = f"{head}<br>mean {i.mean:.4g} over {i.n} run(s)"
    if i.low is not None and i.high is not None:
        text += f"<br>95% bootstrap interval {i.low:.4g} .. {i.high:.4g}"
    else:
        text += " (single seed: no interval)"
    if p.diverged:
        text += f"<br>{p.diverged} run(s) diverged"
    return text


def article_figure(info: ArticleInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, line in enumerate(info.lines):
        colour = PALETTE[k % len(PALETTE)]
        group = f"lr={line.learning_rate:g}"
        if info.repeats:
            for segment in _segments(line.points):
                xs = [p.batch_size for p in segment]
                highs = [p.interval.high for p in segment if p.interval is not None]
                # A band reaching zero or below cannot be drawn on a log axis; it stops
                # at the floor (the hover text keeps the true interval).
                lows = [max(p.interval.low or 0.0, info.floor or 0.0) for p in segment
                        if p.interval is not None]
                fig.add_trace(go.Scatter(
                    x=xs + xs[::-1], y=highs + lows[::-1], fill="toself", fillcolor=colour,
                    opacity=0.18, line={"width": 0}, mode="lines", hoverinfo="skip",
                    legendgroup=group, showlegend=False, name=f"{group} 95% interval",
                ))
            xs_runs = [p.batch_size for p in line.points for _ in p.runs]
            ys_runs = [v for p in line.points for v in p.runs]
            fig.add_trace(go.Scatter(
                x=xs_runs, y=ys_runs, mode="markers", opacity=0.35,
                marker={"color": colour, "size": 6}, legendgroup=group, showlegend=False,
                name=f"{group} single runs",
                hovertemplate=f"{group}, batch size %{{x}}<br>single run %{{y:.4g}}<extra></extra>",
            ))
        fig.add_trace(go.Scatter(
            x=[p.batch_size for p in line.points],
            y=[p.interval.mean if p.interval is not None else None for p in line.points],
            mode="lines+markers", connectgaps=False, name=group, legendgroup=group,
            line={"color": colour, "width": 2}, marker={"color": colour, "size": 8},
            hovertext=[_mean_hover(line.learning_rate, p) for p in line.points],
            hoverinfo="text",
        ))
    what = f"mean over seeds, band: {BOOTSTRAP_WORDS}, faint dots: single runs" \
        if info.repeats else "single seed: one run per cell, no interval"
    notes = [what]
    if info.diverged:
        by_lr: dict[float, list[str]] = {}
        for lr, b, _ in info.diverged:
            by_lr.setdefault(lr, []).append(str(b))
        cells = "; ".join(f"lr={lr:g} at batch size {', '.join(bs)}" for lr, bs in by_lr.items())
        notes.append(f"diverged, no loss, not drawn: {cells}")
    if info.partly:
        cells = "; ".join(f"lr={lr:g} at batch size {b}: {d} of {n} runs"
                          for lr, b, d, n in info.partly)
        notes.append(f"partly diverged, mean of the rest: {cells}")
    fig.update_layout(
        title={"text": f"{final_words(info.y_label)} against batch size, one line per learning rate"
                       + "".join(f"<br><sup>{n}</sup>" for n in notes)},
        margin={"t": 70 + 18 * len(notes)},
        xaxis={"type": "log", "title": {"text": "batch size"},
               "tickvals": list(info.batch_sizes), "ticktext": [str(b) for b in info.batch_sizes]},
        yaxis={"type": "log", "title": {"text": info.y_label}},
        legend={"title": {"text": "learning rate"}},
        template="plotly_white",
    )
    return fig


# --------------------------------------------------------------------------- heat map


class HeatmapInfo(NamedTuple):
    title: str
    label: str  # what the colour is
    batch_sizes: tuple[int, ...]  # rows, bottom to top
    learning_rates: tuple[float, ...]  # columns, left to right (ascending)
    means: tuple[tuple[float | None, ...], ...]  # [row][column]; None: no number to colour
    text: tuple[tuple[str, ...], ...]  # what each cell says
    hover: tuple[tuple[str, ...], ...]
    diverged: tuple[tuple[int, int], ...]  # (row, column) of cells whose every run diverged
    empty: tuple[tuple[int, int, str], ...]  # (row, column, why) other cells with no number
    # (row, first column, last column) of each batch size's plateau of good learning rates:
    # the grid learning rates inside it (see `scaling.Optimum.plateau`); outlined.
    plateaus: tuple[tuple[int, int, int], ...] = ()


def _cell_words(cell: GridCell | None) -> str:
    if cell is None:
        return "not run"
    if cell.pruned and not cell.values:
        return "pruned"
    return "no value"


def heatmap_info(records: Iterable[TrialRecord], metric: str, label: str,
                 plateaus: Mapping[int, tuple[float, float]] | None = None) -> HeatmapInfo:
    """The batch size x learning rate grid of `metric` (mean over seeds) as data; with
    `plateaus` (batch size -> (lowest, highest) good learning rate), the grid cells inside
    each batch size's plateau are outlined."""
    g = grid(records, metric)
    lrs = tuple(sorted(g.learning_rates))
    repeated = any(len(c.values) > 1 for c in g.cells.values())
    means, text, hover = [], [], []
    diverged, empty = [], []
    for r, b in enumerate(g.batch_sizes):
        row_m, row_t, row_h = [], [], []
        for c, lr in enumerate(lrs):
            cell = g.cell(b, lr)
            mean = cell.mean if cell is not None else None
            head = f"batch size {b}, lr={lr:g}"
            if mean is not None and cell is not None:
                n = len(cell.values)
                words = format_value(mean)
                more = f" ({cell.diverged}/{n + cell.diverged} div)" if cell.diverged else ""
                interval = bootstrap_interval(cell.values)
                spread = ""
                words += more
                if interval is not None and interval.low is not None and interval.high is not None:
                    words += f"<br>[{interval.low:.3g}, {interval.high:.3g}]"
                    spread = (f"<br>{BOOTSTRAP_WORDS}: {interval.low:.4g} .. "
                              f"{interval.high:.4g}")
                elif repeated and not cell.diverged:
                    words += " (1 run)"
                row_t.append(words)
                row_h.append(f"{head}<br>{label}: {mean:.4g} (mean of {n}"
                             + (", single seed)" if n == 1 else ")") + spread
                             + (f"<br>{cell.diverged} run(s) diverged" if cell.diverged else ""))
            elif cell is not None and cell.diverged:
                diverged.append((r, c))
                row_t.append("diverged")
                row_h.append(f"{head}<br>diverged ({cell.diverged} run(s)); no {label}")
            else:
                why = _cell_words(cell)
                empty.append((r, c, why))
                row_t.append(why)
                row_h.append(f"{head}<br>{why}")
            row_m.append(mean)
        means.append(tuple(row_m))
        text.append(tuple(row_t))
        hover.append(tuple(row_h))
    title = f"{label[:1].upper()}{label[1:]} over the batch size x learning rate grid"
    title += (f"<br><sup>mean over seeds [{BOOTSTRAP_WORDS}]</sup>" if repeated
              else "<br><sup>single seed: one run per cell, no interval</sup>")
    outlined = []
    for r, b in enumerate(g.batch_sizes):
        span = (plateaus or {}).get(b)
        if span is None:
            continue
        # A grid point counts as inside when it is within the plateau up to rounding.
        cols = [c for c, lr in enumerate(lrs) if span[0] * (1 - 1e-9) <= lr <= span[1] * (1 + 1e-9)]
        if cols:
            outlined.append((r, cols[0], cols[-1]))
    if outlined:
        title += "<br><sup>outlined: the grid learning rates within the plateau of good ones</sup>"
    return HeatmapInfo(title, label, g.batch_sizes, lrs, tuple(means), tuple(text), tuple(hover),
                       tuple(diverged), tuple(empty), tuple(outlined))


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks spanning [low, high] (both positive), for a colour bar in log10 units."""
    ticks = []
    for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if low <= v <= high:
                ticks.append(v)
    if len(ticks) >= 3:
        return ticks
    # Less than a decade: a few evenly log-spaced ticks, at 3 significant digits.
    n = 4
    return [float(f"{low * (high / low) ** (k / n):.3g}") for k in range(n + 1)] \
        if high > low else [low]


def heatmap_figure(info: HeatmapInfo) -> go.Figure:
    import plotly.graph_objects as go

    numbers = [v for row in info.means for v in row if v is not None]
    log = bool(numbers) and min(numbers) > 0
    z = [[(math.log10(v) if log else v) if v is not None else None for v in row]
         for row in info.means]
    colorbar: dict[str, object] = {"title": {"text": info.label + ("<br>(log scale)" if log else "")}}
    if log:
        ticks = _log_ticks(min(numbers), max(numbers))
        colorbar.update(tickvals=[math.log10(t) for t in ticks], ticktext=[f"{t:g}" for t in ticks])
    numeric_text = [[t if v is not None else "" for t, v in zip(trow, mrow, strict=True)]
                    for trow, mrow in zip(info.text, info.means, strict=True)]
    # A quantity with both signs (the generalization gap) gets a diverging scale about 0.
    signed = bool(numbers) and min(numbers) < 0 < max(numbers)
    fig = go.Figure(go.Heatmap(
        x=list(range(len(info.learning_rates))), y=list(range(len(info.batch_sizes))), z=z,
        text=numeric_text, texttemplate="%{text}", hovertext=[list(h) for h in info.hover],
        hoverinfo="text", colorscale="RdBu_r" if signed else "Viridis",
        zmid=0 if signed else None, colorbar=colorbar, xgap=2, ygap=2,
    ))
    for k, (r, c) in enumerate(info.diverged):
        fig.add_trace(go.Scatter(
            x=[c - 0.5, c + 0.5, c + 0.5, c - 0.5, c - 0.5],
            y=[r - 0.5, r - 0.5, r + 0.5, r + 0.5, r - 0.5],
            fill="toself", mode="lines", line={"width": 0}, fillcolor="#f2f2f2",
            fillpattern={"shape": "x", "fgcolor": "#9a9a9a", "size": 10, "solidity": 0.15},
            hoveron="fills", hoverinfo="text", text=info.hover[r][c],
            name="diverged (no value)", legendgroup="diverged", showlegend=k == 0,
        ))
    for k, (r, c0, c1) in enumerate(info.plateaus):
        fig.add_trace(go.Scatter(
            x=[c0 - 0.48, c1 + 0.48, c1 + 0.48, c0 - 0.48, c0 - 0.48],
            y=[r - 0.48, r - 0.48, r + 0.48, r + 0.48, r - 0.48], mode="lines",
            line={"color": "#ff2d55", "width": 3}, hoverinfo="skip",
            name="plateau (within tolerance of the best)", legendgroup="plateau",
            showlegend=k == 0))
    annotations = [
        {"x": c, "y": r, "text": "<b>diverged</b>", "showarrow": False,
         "font": {"color": "#b00020", "size": 13}, "bgcolor": "rgba(255,255,255,0.8)"}
        for r, c in info.diverged
    ] + [
        {"x": c, "y": r, "text": why, "showarrow": False, "font": {"color": "#555"}}
        for r, c, why in info.empty
    ]
    fig.update_layout(
        title={"text": info.title},
        xaxis={"title": {"text": "learning rate"}, "tickvals": list(range(len(info.learning_rates))),
               "ticktext": [f"{lr:g}" for lr in info.learning_rates], "showgrid": False,
               "zeroline": False},
        yaxis={"title": {"text": "batch size"}, "tickvals": list(range(len(info.batch_sizes))),
               "ticktext": [str(b) for b in info.batch_sizes], "showgrid": False,
               "zeroline": False},
        annotations=annotations,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1.0, "xanchor": "right"},
        template="plotly_white",
    )
    return fig


# --------------------------------------------------------------------------- lines with intervals


class SeriesPoint(NamedTuple):
    x: float
    interval: Interval | None  # mean over seeds and its 95% bootstrap interval; None: no value
    runs: tuple[float, ...]


class Series(NamedTuple):
    name: str  # legend entry: "lr=0.01" or "B=64"
    points: tuple[SeriesPoint, ...]


class Reference(NamedTuple):
    """A dashed reference line (or curve) drawn beside the data."""

    name: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    colour: str = "#444"
    dash: str = "dash"


class Panel(NamedTuple):
    title: str
    x_label: str
    y_label: str
    y_log: bool
    series: tuple[Series, ...]
    x_ticks: tuple[float, ...]
    references: tuple[Reference, ...] = ()


class PanelsInfo(NamedTuple):
    """One or more side-by-side panels of lines with interval bands."""

    title: str
    notes: tuple[str, ...]  # subtitle lines: what the bands are, single seed, ...
    panels: tuple[Panel, ...]
    repeats: bool


def _seed_note(repeats: bool) -> str:
    return (f"lines: mean over seeds; bands and bars: {BOOTSTRAP_WORDS}" if repeats
            else "single seed: one run per cell, no interval")


def series_panel(records: Sequence[TrialRecord], metric: str, by: str, title: str,
                 y_label: str, references: Sequence[Reference] = ()) -> Panel:
    """`metric` per cell as lines: one per learning rate over batch size (`by` =
    "learning_rate"), or one per batch size over learning rate (`by` = "batch_size")."""
    g = grid(records, metric)
    keys: Sequence[float] = g.learning_rates if by == "learning_rate" else g.batch_sizes
    xs: Sequence[float] = g.batch_sizes if by == "learning_rate" else sorted(g.learning_rates)
    series = []
    for key in keys:
        points = []
        for x in xs:
            cell = g.cell(int(key), float(x)) if by == "batch_size" else g.cell(int(x), float(key))
            values = cell.values if cell is not None else ()
            points.append(SeriesPoint(float(x), bootstrap_interval(values), tuple(values)))
        if any(p.interval is not None for p in points):
            name = f"lr={key:g}" if by == "learning_rate" else f"B={int(key)}"
            series.append(Series(name, tuple(points)))
    drawn = [v for s in series for p in s.points for v in p.runs]
    x_label = "batch size" if by == "learning_rate" else "learning rate"
    return Panel(title, x_label, y_label, bool(drawn) and min(drawn) > 0, tuple(series),
                 tuple(float(x) for x in xs), tuple(references))


def _has(records: Sequence[TrialRecord], metric: str) -> bool:
    return any(r.status == "complete" and metric_of(r, metric) is not None for r in records)


def generalization_info(records: Sequence[TrialRecord], objective_label: str) -> PanelsInfo:
    """Validation loss and the generalization gap (validation - training) per cell."""
    recs = list(records)
    val = series_panel(recs, "val_loss", "learning_rate", "Validation loss",
                       METRIC_LABELS["val_loss"])
    gap = series_panel(recs, "gap", "learning_rate", "Gap: validation - training loss",
                       "validation - final training loss")
    repeats = any(len(p.runs) > 1 for pn in (val, gap) for s in pn.series for p in s.points)
    notes = (_seed_note(repeats), f"the study's objective: {objective_label}")
    return PanelsInfo("Generalization: validation loss and gap against batch size, one line per "
                      "learning rate", notes, (val, gap), repeats)


def sharpness_info(records: Sequence[TrialRecord]) -> PanelsInfo | None:
    """Sharpness (top Hessian eigenvalue after training) against batch size and learning
    rate, with 2/lr: the stability limit of gradient descent, which full-batch GD's
    sharpness rises to (Cohen et al. 2021, "edge of stability"). Keskar et al. 2017 found
    larger batches reach sharper minima; Dinh et al. 2017 caution that sharpness depends
    on the parametrization. None when no trial recorded `sharpness`."""
    recs = list(records)
    if not _has(recs, R.SHARPNESS):
        return None
    label = METRIC_LABELS[R.SHARPNESS]
    by_b = series_panel(recs, R.SHARPNESS, "learning_rate", "Against batch size", label)
    lrs = sorted({r.learning_rate for r in recs if r.learning_rate is not None})
    ref = Reference("2 / lr (GD stability limit)", tuple(lrs), tuple(2.0 / lr for lr in lrs))
    by_lr = series_panel(recs, R.SHARPNESS, "batch_size", "Against learning rate", label, [ref])
    repeats = any(len(p.runs) > 1 for s in by_b.series for p in s.points)
    notes = (_seed_note(repeats), "dashed: 2/lr, where gradient descent becomes unstable "
             "(Cohen et al. 2021); for Adam the preconditioned sharpness is what meets it")
    return PanelsInfo("Sharpness: top Hessian eigenvalue of the training loss after training",
                      notes, (by_b, by_lr), repeats)


def noise_info(s: S.Scaling) -> PanelsInfo | None:
    """B_simple per cell (McCandlish et al. 2018) against batch size, one line per learning
    rate; with the predicted critical batch size (B_simple pooled at the optima), the
    B_noise fitted to lr*(B), and B = B_simple (above that line, a batch is past its noise
    scale: more examples per step buy little). None when no trial recorded it."""
    n = s.noise
    if n is None:
        return None
    lrs = sorted({c.learning_rate for c in n.cells}, reverse=True)
    bs = sorted({c.batch_size for c in n.cells})
    series = []
    for lr in lrs:
        by_b = {c.batch_size: c for c in n.cells if c.learning_rate == lr}
        series.append(Series(f"lr={lr:g}", tuple(
            SeriesPoint(float(b), by_b[b].interval if b in by_b else None, ()) for b in bs)))
    lo, hi = bs[0] / 1.5, bs[-1] * 1.5
    refs = [Reference("B_simple = B", (lo, hi), (lo, hi), "#999", "dot")]
    c = n.critical
    refs.append(Reference(f"predicted critical batch size {c.mean:.3g}", (lo, hi),
                          (c.mean, c.mean), "#b00020", "dash"))
    m = s.mccandlish
    if m is not None and m.bound is None:
        refs.append(Reference(f"B_noise fitted to lr*(B): {m.b_noise:.3g}", (lo, hi),
                              (m.b_noise, m.b_noise), "#00a070", "dashdot"))
    finite = [p.interval.mean for sr in series for p in sr.points
              if p.interval is not None and math.isfinite(p.interval.mean)]
    repeats = any(p.interval is not None and not p.interval.single
                  for sr in series for p in sr.points)
    how = "tr(Sigma) and |G|^2 averaged over seeds, then divided" if n.pooled else \
        "mean of each run's B_simple"
    panel = Panel("", "batch size", "B_simple = tr(Sigma) / |G|^2", bool(finite) and
                  min(finite) > 0, tuple(series), tuple(float(b) for b in bs), tuple(refs))
    return PanelsInfo("Gradient noise scale B_simple per cell (McCandlish et al. 2018)",
                      (_seed_note(repeats), how), (panel,), repeats)


def _band_traces(fig: go.Figure, s: Series, colour: str, group: str, row: int, col: int,
                 y_log: bool, show: bool) -> None:
    import plotly.graph_objects as go

    for seg in _segments(s.points):
        xs = [p.x for p in seg]
        highs = [p.interval.high for p in seg if p.interval is not None]
        lows = [p.interval.low for p in seg if p.interval is not None]
        if y_log and any(v is None or v <= 0 or not math.isfinite(v) for v in highs + lows):
            continue
        fig.add_trace(go.Scatter(
            x=xs + xs[::-1], y=highs + lows[::-1], fill="toself", fillcolor=colour, opacity=0.18,
            line={"width": 0}, mode="lines", hoverinfo="skip", legendgroup=group,
            showlegend=False, name=f"{group} 95% interval"), row=row, col=col)
    ys = [p.interval.mean if p.interval is not None and math.isfinite(p.interval.mean) else None
          for p in s.points]
    hover = []
    for p in s.points:
        i = p.interval
        if i is None:
            hover.append(f"{s.name}, x={p.x:g}: no value")
        elif i.low is None or i.high is None:
            hover.append(f"{s.name}, x={p.x:g}: {i.mean:.4g} (single seed)")
        else:
            hover.append(f"{s.name}, x={p.x:g}: {i.mean:.4g} (mean of {i.n})<br>95% bootstrap "
                         f"interval {i.low:.4g} .. {i.high:.4g}")
    fig.add_trace(go.Scatter(
        x=[p.x for p in s.points], y=ys, mode="lines+markers", connectgaps=False, name=s.name,
        legendgroup=group, showlegend=show, line={"color": colour, "width": 2},
        marker={"color": colour, "size": 7}, hovertext=hover, hoverinfo="text"),
        row=row, col=col)


def panels_figure(info: PanelsInfo) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(info.panels),
                        subplot_titles=[p.title for p in info.panels],
                        horizontal_spacing=0.12)
    colours: dict[str, str] = {}
    shown: set[str] = set()
    for k, panel in enumerate(info.panels, start=1):
        for s in panel.series:
            colour = colours.setdefault(s.name, PALETTE[len(colours) % len(PALETTE)])
            _band_traces(fig, s, colour, s.name, 1, k, panel.y_log, s.name not in shown)
            shown.add(s.name)
        for ref in panel.references:
            fig.add_trace(go.Scatter(
                x=list(ref.xs), y=list(ref.ys), mode="lines", name=ref.name,
                line={"color": ref.colour, "dash": ref.dash, "width": 1.5},
                hovertemplate=f"{ref.name}<br>%{{x:.4g}}, %{{y:.4g}}<extra></extra>"),
                row=1, col=k)
        fig.update_xaxes(type="log", title_text=panel.x_label, tickvals=list(panel.x_ticks),
                         ticktext=[f"{x:g}" for x in panel.x_ticks], row=1, col=k)
        fig.update_yaxes(type="log" if panel.y_log else "linear", title_text=panel.y_label,
                         row=1, col=k)
    fig.update_layout(
        title={"text": info.title + "".join(f"<br><sup>{n}</sup>" for n in info.notes)},
        margin={"t": 90 + 18 * len(info.notes)}, template="plotly_white",
    )
    return fig


# --------------------------------------------------------------------------- scaling chart


class ScalingPoint(NamedTuple):
    batch_size: int
    lr: float  # refined optimum
    low: float | None  # 95% bootstrap interval (None: single seed)
    high: float | None
    grid_lr: float
    edge: str | None
    refined: bool


class ScalingInfo(NamedTuple):
    title: str
    notes: tuple[str, ...]
    points: tuple[ScalingPoint, ...]
    fit: Reference | None  # the fitted power law over the fitted batch sizes
    references: tuple[Reference, ...]  # the four rules, through the fit's centre
    mccandlish: Reference | None
    verticals: tuple[tuple[str, float, float | None, float | None, str], ...]  # (name, B, low, high, colour)
    x_range: tuple[float, float]
    plateaus: tuple[tuple[int, float, float], ...] = ()  # (B, low, high): the good learning rates
    shape: Reference | None = None  # the chosen shape's curve


_RULE_COLOURS = {"inverse": "#7f7f7f", "constant": "#bcbd22", "square-root": "#17becf",
                 "linear": "#9467bd"}


def scaling_info(s: S.Scaling, optimizer: str | None = None) -> ScalingInfo:
    """lr*(B) with intervals, the fitted power law, the four rules and McCandlish's form."""
    pts = tuple(ScalingPoint(p.batch_size, p.lr, p.low, p.high, p.grid_lr, p.edge, p.refined)
                for p in s.optima.points)
    bs = [p.batch_size for p in pts] or [1]
    lo, hi = min(bs) / 1.4, max(bs) * 1.4
    xs = tuple(float(x) for x in np.geomspace(lo, hi, 60))
    f = s.fit
    fit_ref = None
    refs: list[Reference] = []
    if f is not None:
        ci = f" [{f.low:.2f}, {f.high:.2f}]" if f.low is not None and f.high is not None else ""
        fit_ref = Reference(f"fit: lr* ~ B^{f.alpha:.2f}{ci}", xs,
                            tuple(f.predict(x) for x in xs), "#d62728", "solid")
        centre = math.exp(float(np.mean(np.log(f.batch_sizes))))
        y_c = f.predict(centre)
        for v in s.verdicts:
            h = v.hypothesis
            refs.append(Reference(
                f"{h.name} (alpha={h.alpha:g}): {v.word}", xs,
                tuple(y_c * (x / centre) ** h.alpha for x in xs), _RULE_COLOURS[h.name], "dot"))
    m = s.mccandlish
    mc_ref = None
    if m is not None:
        words = f"B_noise={m.b_noise:.3g}" if m.bound is None else \
            f"B_noise {'>' if m.bound == 'high' else '<'} {m.b_noise:.3g} (not identified)"
        mc_ref = Reference(f"McCandlish: {m.lr_max:.3g} / (1 + B_noise/B), {words}", xs,
                           tuple(m.predict(x) for x in xs), "#2ca02c", "dashdot")
    verticals: list[tuple[str, float, float | None, float | None, str]] = []
    if s.noise is not None:
        c = s.noise.critical
        if math.isfinite(c.mean) and c.mean > 0:
            verticals.append((f"measured B_simple {c.mean:.3g} (predicted critical batch)",
                              c.mean, c.low, c.high, "#b00020"))
    if m is not None and m.bound is None:
        verticals.append((f"B_noise from the fit {m.b_noise:.3g}", m.b_noise, None, None,
                          "#2ca02c"))
    repeats = any(p.low is not None for p in pts)
    notes = [f"points: lr*, the minimum of a smooth fit in log(lr); bars: {BOOTSTRAP_WORDS}"
             if repeats else "single seed: lr* without interval"]
    if any(p.edge for p in pts):
        notes.append("hollow: best on the grid's edge (a bound; widen the grid)")
    if s.why:
        notes.append(s.why)
    head = S.headline(s, optimizer)
    plateaus = tuple((p.batch_size, p.plateau[0], p.plateau[1]) for p in s.optima.points
                     if p.plateau is not None)
    if plateaus:
        notes.append(f"band: the learning rates within {s.optima.tolerance * 100:g}% of the best "
                     "expected objective at each batch size")
    shape_ref = None
    if s.shape_fits is not None:
        chosen = s.shape_fits.chosen
        shape_ref = Reference(f"chosen shape: {chosen.shape}", xs,
                              tuple(float(y) for y in chosen.predict(np.array(xs))), "#ff7f0e",
                              "solid")
    return ScalingInfo(f"Optimal learning rate against batch size<br><sup>{head}</sup>",
                       tuple(notes), pts, fit_ref, tuple(refs), mc_ref, tuple(verticals),
                       (lo, hi), plateaus, shape_ref)


def scaling_figure(info: ScalingInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    if info.plateaus:
        bs = [b for b, _, _ in info.plateaus]
        fig.add_trace(go.Scatter(
            x=bs + bs[::-1], y=[lo for _, lo, _ in info.plateaus]
            + [hi for _, _, hi in info.plateaus][::-1], fill="toself", mode="lines",
            line={"width": 0}, fillcolor="rgba(255,127,14,0.18)", hoverinfo="skip",
            name="plateau: within tolerance of the best"))
    for ref in (*info.references, info.mccandlish, info.fit, info.shape):
        if ref is None:
            continue
        fig.add_trace(go.Scatter(x=list(ref.xs), y=list(ref.ys), mode="lines", name=ref.name,
                                 line={"color": ref.colour, "dash": ref.dash,
                                       "width": 2.5 if ref.dash == "solid" else 1.5},
                                 hoverinfo="name"))
    ys = [p.lr for p in info.points]
    ys += [v for p in info.points for v in (p.low, p.high) if v is not None]
    ys += [y for ref in (info.fit,) if ref is not None for y in ref.ys]
    ys += [v for _, lo, hi in info.plateaus for v in (lo, hi)]
    y_lo, y_hi = (min(ys) / 2, max(ys) * 2) if ys else (1e-4, 1.0)
    for name, x, low, high, colour in info.verticals:
        if low is not None and high is not None and math.isfinite(high):
            fig.add_trace(go.Scatter(x=[low, high, high, low, low],
                                     y=[y_lo, y_lo, y_hi, y_hi, y_lo], fill="toself",
                                     fillcolor=colour, opacity=0.08, line={"width": 0},
                                     mode="lines", hoverinfo="skip", showlegend=False,
                                     legendgroup=name, name=f"{name} interval"))
        fig.add_trace(go.Scatter(x=[x, x], y=[y_lo, y_hi], mode="lines", name=name,
                                 legendgroup=name, line={"color": colour, "dash": "dash",
                                                         "width": 1.5}, hoverinfo="name"))
    pts = info.points
    fig.add_trace(go.Scatter(
        x=[p.batch_size for p in pts], y=[p.lr for p in pts], mode="markers", name="lr* (refined)",
        marker={"color": "#222", "size": 11,
                "symbol": ["circle-open" if p.edge else "circle" for p in pts]},
        error_y={"type": "data", "symmetric": False,
                 "array": [(p.high - p.lr) if p.high is not None else 0 for p in pts],
                 "arrayminus": [(p.lr - p.low) if p.low is not None else 0 for p in pts],
                 "color": "#222", "thickness": 1.5, "width": 6},
        hovertext=[f"B={p.batch_size}: lr* {p.lr:.3g}"
                   + (f" [{p.low:.3g}, {p.high:.3g}]" if p.low is not None and p.high is not None
                      else " (single seed)")
                   + f"<br>best grid lr {p.grid_lr:g}"
                   + (f"<br>on the grid's {p.edge} edge: a bound" if p.edge else "")
                   for p in pts], hoverinfo="text"))
    fig.add_trace(go.Scatter(
        x=[p.batch_size for p in pts], y=[p.grid_lr for p in pts], mode="markers",
        name="best grid lr", marker={"color": "#888", "size": 7, "symbol": "x"},
        hovertemplate="B=%{x}: best grid lr %{y:g}<extra></extra>"))
    fig.update_layout(
        title={"text": info.title + "".join(f"<br><sup>{n}</sup>" for n in info.notes)},
        margin={"t": 110 + 18 * len(info.notes)},
        xaxis={"type": "log", "title": {"text": "batch size B"},
               "tickvals": [p.batch_size for p in pts],
               "ticktext": [str(p.batch_size) for p in pts]},
        yaxis={"type": "log", "title": {"text": "optimal learning rate lr*"},
               "range": [math.log10(y_lo), math.log10(y_hi)]},
        template="plotly_white",
    )
    return fig


# --------------------------------------------------------------------------- optimum per batch size


class OptimumCurve(NamedTuple):
    batch_size: int
    lrs: tuple[float, ...]
    means: tuple[float | None, ...]  # None: no finite mean (a run diverged, or none)
    intervals: tuple[Interval | None, ...]
    diverged: tuple[float, ...]  # learning rates where a run diverged
    fit_xs: tuple[float, ...]  # the smooth fit (the mean against ln(lr)), over its window
    fit_ys: tuple[float, ...]
    lr: float
    star_y: float | None  # where lr* sits on the line of means (log-log interpolation)
    edge: str | None


class OptimumInfo(NamedTuple):
    title: str
    notes: tuple[str, ...]
    y_label: str
    curves: tuple[OptimumCurve, ...]
    y_range: tuple[float, float] | None  # the data's span: a fit dipping below is cut off


def _on_line(xs: Sequence[float], ys: Sequence[float | None], x: float) -> float | None:
    """y at x on the polyline through (xs, ys), interpolated in log-log."""
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False):
        if x0 <= x <= x1 and y0 is not None and y1 is not None and y0 > 0 and y1 > 0:
            t = math.log(x / x0) / math.log(x1 / x0)
            return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))
    return None


def optimum_info(records: Sequence[TrialRecord], s: S.Scaling, y_label: str) -> OptimumInfo:
    """Mean objective against learning rate, one line per batch size, with the smooth fit that
    refines each optimum and the optimum itself."""
    g = grid(records)
    curves = []
    for p in s.optima.points:
        intervals = []
        for lr in p.learning_rates:
            cell = g.cell(p.batch_size, lr)
            intervals.append(bootstrap_interval(cell.values) if cell is not None
                             and not cell.diverged else None)
        fit_xs: tuple[float, ...] = ()
        fit_ys: tuple[float, ...] = ()
        if p.curve is not None and p.window is not None:
            xs = np.linspace(math.log(p.window[0]), math.log(p.window[1]), 121)
            fit_xs = tuple(float(x) for x in np.exp(xs))
            fit_ys = tuple(float(y) for y in np.polynomial.polynomial.polyval(xs, p.curve))
        means = tuple(m if math.isfinite(m) else None for m in p.means)
        curves.append(OptimumCurve(
            p.batch_size, p.learning_rates, means, tuple(intervals),
            tuple(lr for lr, m in zip(p.learning_rates, p.means, strict=True) if m == math.inf),
            fit_xs, fit_ys, p.lr, _on_line(p.learning_rates, means, p.lr), p.edge))
    repeats = any(i is not None and not i.single for c in curves for i in c.intervals)
    notes = [_seed_note(repeats), "dashed: the smooth fit in log(lr) through the best grid lr "
             "and up to two neighbours each side; star: its minimum lr*, placed on the line"]
    if any(c.diverged for c in curves):
        notes.append("learning rates where a run diverged are left out (never the optimum)")
    span = [v for c in curves for i in c.intervals if i is not None
            for v in (i.mean, i.low, i.high) if v is not None and v > 0]
    y_range = (min(span) / 1.5, max(span) * 1.5) if span else None
    return OptimumInfo("Mean objective against learning rate, one line per batch size",
                       tuple(notes), y_label, tuple(curves), y_range)


def optimum_figure(info: OptimumInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, c in enumerate(info.curves):
        colour = PALETTE[k % len(PALETTE)]
        group = f"B={c.batch_size}"
        fig.add_trace(go.Scatter(
            x=list(c.lrs), y=list(c.means), mode="lines+markers", name=group, legendgroup=group,
            connectgaps=False, line={"color": colour, "width": 2}, marker={"color": colour},
            error_y={"type": "data", "symmetric": False,
                     "array": [(i.high - i.mean) if i is not None and i.high is not None else 0
                               for i in c.intervals],
                     "arrayminus": [(i.mean - i.low) if i is not None and i.low is not None
                                    else 0 for i in c.intervals],
                     "color": colour, "thickness": 1},
            hovertext=[f"{group}, lr={lr:g}: " + ("a run diverged" if m is None else
                                                  f"{m:.4g}") for lr, m in
                       zip(c.lrs, c.means, strict=True)], hoverinfo="text"))
        if c.fit_xs:
            fig.add_trace(go.Scatter(
                x=list(c.fit_xs), y=list(c.fit_ys), mode="lines", legendgroup=group,
                showlegend=False, name=f"{group} fit",
                line={"color": colour, "dash": "dash", "width": 1}, hoverinfo="skip"))
        if c.star_y is not None:
            fig.add_trace(go.Scatter(
                x=[c.lr], y=[c.star_y], mode="markers", legendgroup=group, showlegend=False,
                name=f"{group} lr*", marker={"color": colour, "symbol": "star", "size": 13},
                hovertemplate=f"{group}: lr* %{{x:.3g}}<extra></extra>"))
    fig.update_layout(
        title={"text": info.title + "".join(f"<br><sup>{n}</sup>" for n in info.notes)},
        margin={"t": 80 + 18 * len(info.notes)},
        xaxis={"type": "log", "title": {"text": "learning rate"}},
        yaxis={"type": "log", "title": {"text": info.y_label},
               **({"range": [math.log10(info.y_range[0]), math.log10(info.y_range[1])]}
                  if info.y_range else {})},
        legend={"title": {"text": "batch size"}}, template="plotly_white",
    )
    return fig


# --------------------------------------------------------------------------- steps to a target


class CriticalInfo(NamedTuple):
    title: str
    notes: tuple[str, ...]
    # Per target: (name, [(B, examples, steps, low steps, high steps)], the fitted front as
    # (examples, steps) points, or () without a fit).
    targets: tuple[tuple[str, tuple[tuple[int, float, float, float | None, float | None], ...],
                         tuple[tuple[float, float], ...]], ...]


def critical_info(found: Sequence[C.Critical]) -> CriticalInfo | None:
    """Steps against examples to each target, one point per batch size, with McCandlish
    et al.'s fitted front (S / S_min - 1)(E / E_min - 1) = 1; None without any point."""
    targets = []
    notes = []
    for c in found:
        pts = tuple((p.batch_size, p.steps * p.batch_size, p.steps, p.low, p.high)
                    for p in c.points if p.steps is not None)
        front: tuple[tuple[float, float], ...] = ()
        if c.s_min is not None and c.b_crit is not None and pts:
            bs = np.geomspace(min(b for b, *_ in pts) / 2, max(b for b, *_ in pts) * 2, 80)
            steps = c.s_min.value * (1 + c.b_crit.value / bs)
            front = tuple((float(b * s), float(s)) for b, s in zip(bs, steps, strict=True))
            words = f"B_crit = E_min / S_min = {c.b_crit.value:.3g}"
            if c.b_crit.low is not None and c.b_crit.high is not None:
                words += f" [{c.b_crit.low:.3g}, {c.b_crit.high:.3g}]"
            notes.append(f"target {c.target:.4g}: S_min {c.s_min.value:.3g}, E_min "
                         f"{c.e_min.value if c.e_min else float('nan'):.3g}, {words}")
        if pts:
            targets.append((f"target {c.target:.4g}", pts, front))
    if not targets:
        return None
    notes.append("points: the fewest steps over learning rates at each batch size (the mean "
                 "over seeds); bars: seed bootstrap; lines: the fitted front")
    return CriticalInfo("Steps and examples to a target loss, per batch size", tuple(notes),
                        tuple(targets))


def critical_figure(info: CriticalInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, (name, pts, front) in enumerate(info.targets):
        colour = PALETTE[k % len(PALETTE)]
        fig.add_trace(go.Scatter(
            x=[e for _, e, *_ in pts], y=[s for _, _, s, _, _ in pts], mode="markers+text",
            name=name, legendgroup=name, marker={"color": colour, "size": 10},
            text=[f"B={b}" for b, *_ in pts], textposition="top right",
            error_y={"type": "data", "symmetric": False,
                     "array": [(hi - s) if hi is not None else 0 for _, _, s, _, hi in pts],
                     "arrayminus": [(s - lo) if lo is not None else 0 for _, _, s, lo, _ in pts],
                     "color": colour},
            hovertemplate="%{text}: %{y:.4g} steps, %{x:.4g} examples<extra></extra>"))
        if front:
            fig.add_trace(go.Scatter(
                x=[e for e, _ in front], y=[s for _, s in front], mode="lines",
                name=f"{name}: fitted front", legendgroup=name,
                line={"color": colour, "dash": "dash"}, hoverinfo="name"))
    fig.update_layout(
        title={"text": info.title + "".join(f"<br><sup>{n}</sup>" for n in info.notes)},
        margin={"t": 80 + 18 * len(info.notes)},
        xaxis={"type": "log", "title": {"text": "examples to the target, E = B S"}},
        yaxis={"type": "log", "title": {"text": "optimizer steps to the target, S"}},
        template="plotly_white")
    return fig
