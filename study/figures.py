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
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from study.analysis import GridCell, Interval, TrialRecord, format_value, grid, mean_interval

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Short names for axes and colour bars; page captions say more.
OBJECTIVE_LABELS = {"train_loss": "final training loss", "val_loss": "validation loss"}
METRIC_LABELS = {"objective": "objective", "train_loss": "final training loss",
                 "val_loss": "validation loss", "full_train_loss": "full training-set loss"}

# Plotly's default qualitative palette, fixed here so a learning rate keeps its colour
# between the line, its band and its single runs.
PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
           "#b6e880", "#ff97ff", "#fecb52")


def objective_label(objective: str) -> str:
    return OBJECTIVE_LABELS.get(objective, objective)


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


def article_info(records: Iterable[TrialRecord], y_label: str) -> ArticleInfo:
    """The article's chart as data: final loss against batch size, one line per learning rate."""
    g = grid(records)
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
            interval = mean_interval(values)
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


def _segments(points: Sequence[ArticlePoint]) -> list[list[ArticlePoint]]:
    """Runs of adjacent points that all have an interval: a band must not bridge a gap."""
    out: list[list[ArticlePoint]] = []
    current: list[ArticlePoint] = []
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
        text += f"<br>95% interval {i.low:.4g} .. {i.high:.4g}"
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
    what = "mean over seeds, 95% interval band, faint dots: single runs" if info.repeats \
        else "one run per cell"
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
        title={"text": "Final loss against batch size, one line per learning rate"
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


def _cell_words(cell: GridCell | None) -> str:
    if cell is None:
        return "not run"
    if cell.pruned and not cell.values:
        return "pruned"
    return "no value"


def heatmap_info(records: Iterable[TrialRecord], metric: str, label: str) -> HeatmapInfo:
    """The batch size x learning rate grid of `metric` (mean over seeds) as data."""
    g = grid(records, metric)
    lrs = tuple(sorted(g.learning_rates))
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
                row_t.append(words + more)
                row_h.append(f"{head}<br>{label}: {mean:.4g} (mean of {n})"
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
    return HeatmapInfo(title, label, g.batch_sizes, lrs, tuple(means), tuple(text), tuple(hover),
                       tuple(diverged), tuple(empty))


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
    fig = go.Figure(go.Heatmap(
        x=list(range(len(info.learning_rates))), y=list(range(len(info.batch_sizes))), z=z,
        text=numeric_text, texttemplate="%{text}", hovertext=[list(h) for h in info.hover],
        hoverinfo="text", colorscale="Viridis", colorbar=colorbar, xgap=2, ygap=2,
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
