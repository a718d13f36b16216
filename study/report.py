"""`study report`: the study as offline HTML in dashboards/<study>/, and our figures in optuna-dashboard.

Reading and writing are kept apart from building: `load_view` reads the study once,
the figure and page functions are pure (data in, figure or HTML string out), and
`write_report` does the I/O. plotly.js is written once beside the pages
(`plotly.min.js`, from the installed plotly package) and every page loads it by a
relative path, so the pages open from `file://` with the network off.
"""

from __future__ import annotations

import datetime
import functools
import html
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from study import analysis, figures
from study import critical as C
from study import records as R
from study import scaling as S
from study.analysis import TrialRecord
from study.spec import Spec, from_stored, to_toml

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

PLOTLY_JS = "plotly.min.js"
INDEX = "index.html"
# Graph object ids in optuna-dashboard: stable, so a new report replaces the old figure.
DASHBOARD_FIGURES = {"article": "article-chart", "heatmap_objective": "heatmap-objective",
                     "scaling": "scaling-chart"}
# Figures the index shows inline, in this order (each also has its own page).
EMBEDDED = ("scaling.html", "article.html", "heatmap_objective.html")
NOTE_END = "*(End of the summary written by `study report`; it replaces everything above this " \
    "line each time. Write your own notes below.)*"
# Display options for every figure: no plotly logo; resize with the window.
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class StudyView:
    """What a report shows of one study, read once."""

    name: str
    storage: str  # masked URL
    records: list[TrialRecord]
    user_attrs: dict[str, Any]
    params: tuple[str, ...]  # parameter names seen in the trials
    spec: Spec | None  # the stored spec (`spec.from_stored`); None: not made by `study run`

    @property
    def objective(self) -> str:
        return self.spec.train.objective if self.spec is not None else "objective"

    @property
    def sampler(self) -> str:
        return self.spec.search.sampler if self.spec is not None else "grid"

    @property
    def is_grid(self) -> bool:
        return self.sampler == "grid"

    @property
    def objective_label(self) -> str:
        return figures.objective_label(self.objective)

    @property
    def optimizer(self) -> str | None:
        return self.spec.train.optimizer if self.spec is not None else None

    @property
    def budget(self) -> str | None:
        return self.spec.train.budget if self.spec is not None else None

    @functools.cached_property
    def scaling(self) -> S.Scaling:
        """The scaling analysis (optimum per batch size, fits, noise scale), computed once."""
        tolerance = self.spec.analysis.tolerance if self.spec is not None else 0.01
        return S.scaling(self.records, self.objective, tolerance=tolerance)

    def conclusion(self) -> tuple[str, str | None, list[str]]:
        """(headline, noise sentence, caveats): what the study found, generated."""
        if not self.is_grid:
            return (f"The {self.sampler} sampler searched ranges, not a grid: there is no "
                    "optimum per batch size to fit a scaling law to.", None, [])
        s = self.scaling
        return (S.headline(s, self.optimizer), S.noise_sentence(s), S.caveats(s, self.budget))


class Page(NamedTuple):
    """One figure page: its file, what it shows, and the figure (None: skipped, and why)."""

    file: str
    title: str
    caption: str
    figure: go.Figure | None
    skipped: str | None = None


@dataclass
class Report:
    out: Path
    study: str
    files: list[Path]
    skipped: dict[str, str]
    trials: int
    seconds: float
    dashboard: bool
    bytes: int = 0


# --------------------------------------------------------------------------- reading


def load_view(study: optuna.Study, storage: str, url: str | None = None) -> StudyView:
    """The study's trials as records. With the storage's `url`, read by plain read-only
    SQL without the per-epoch curves but with the step curve (`query.trial_rows`, the same
    records): Optuna's reader builds every trial whole, most of a report's time for
    10,000 trials."""
    attrs = dict(study.user_attrs)
    if url is None:
        trials = study.get_trials(deepcopy=False)
        params = tuple(sorted({p for t in trials for p in t.params}))
        records = R.to_records(trials)
    else:
        from study import store
        from study.storage import read_only

        with read_only(url) as conn:
            study_id = store.study_id(conn, study.study_name)
            records = [row.record for row in store.trial_rows(conn, study_id, step_curves=True)]
            params = store.param_names(conn, study_id)
    return StudyView(study.study_name, storage, records, attrs, params,
                     from_stored(attrs.get(R.STUDY_SPEC)))


# Optuna's figures draw every trial they are given, one by one (a trace per trial for the
# learning curves): at most this many reach them.
OPTUNA_TRIALS = 1000


def plot_study(study: optuna.Study, url: str) -> tuple[optuna.Study, str | None]:
    """An in-memory copy of the study for Optuna's figures, and what it leaves out.

    It holds what those figures read (state, params with their distributions, values,
    learning curves), not the attributes, read by plain SQL. A study of more than
    `OPTUNA_TRIALS` trials is cut down: a grid study to its first seeds (every cell
    keeps its trials of those seeds; the copy numbers them on from 0), another to its
    first trials by number. Our own figures, from `load_view`, use every trial.
    """
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState

    from study import store
    from study.space import SEED
    from study.storage import read_only

    with read_only(url) as conn:
        trials = store.plot_trials(conn, store.study_id(conn, study.study_name))
        keep, note = [t.trial_id for t in trials], None
        if len(keep) > OPTUNA_TRIALS:
            seeds = sorted({int(t.params[SEED][0]) for t in trials if SEED in t.params})
            cells = max(1, len(keep) // max(1, len(seeds)))
            if seeds and len(keep) == cells * len(seeds):
                first = set(seeds[:max(1, OPTUNA_TRIALS // cells)])
                keep = [t.trial_id for t in trials
                        if int(t.params.get(SEED, (-1,))[0]) in first]
                note = (f"drawn from the {len(keep)} trials of the first {len(first)} of "
                        f"{len(seeds)} seeds, numbered anew")
            else:
                keep = keep[:OPTUNA_TRIALS]
                note = f"drawn from the first {len(keep)} of {len(trials)} trials"
        kept = set(keep)
        # The kept trials' curves only: the whole study's are 50 rows a trial.
        curves = store.curves_of(conn, keep)
    copy = optuna.create_study(directions=study.directions)
    dists: dict[str, Any] = {}
    made = []
    for t in trials:
        if t.trial_id not in kept:
            continue
        state = TrialState[t.state]
        ps, ds = {}, {}
        for name, (internal, text) in t.params.items():
            dist = dists.setdefault(text, json_to_distribution(text))
            ps[name], ds[name] = dist.to_external_repr(internal), dist
        made.append(optuna.trial.FrozenTrial(
            number=t.number, state=state, value=None,
            values=[t.value] if state == TrialState.COMPLETE and t.value is not None else None,
            datetime_start=t.start, datetime_complete=t.complete, params=ps,
            distributions=ds, user_attrs={}, system_attrs={},
            intermediate_values=curves.get(t.trial_id, {}), trial_id=t.trial_id))
    copy.add_trials(made)
    return copy, note


# --------------------------------------------------------------------------- figures


_OBJECTIVE_MEANS = {"train_loss": "the last epoch's mean training loss, the article's metric",
                    "val_loss": "the held-out loss after training",
                    "val_error": "1 - the held-out accuracy after training"}


_ANALYSIS_HINT = "turn it on in the spec's [analysis] section"


def our_pages(view: StudyView) -> list[Page]:
    """Our figures (pure: records in, figures out): the article's chart, the scaling chart,
    the optimum per batch size, heat maps, generalization, noise scale, sharpness."""
    label = view.objective_label
    val = figures.METRIC_LABELS["val_loss"]
    gap = figures.METRIC_LABELS["gap"]
    if not view.is_grid:
        # Every trial of a continuous search is its own (batch size, learning rate): there
        # is no grid to average seeds over, and one line per learning rate would be one
        # line per trial. Optuna's contour and slice plots show such studies.
        why = f"the study searches with the {view.sampler} sampler, not a grid; see the contour"
        return [Page(file, title, "", None, why) for file, title in (
            ("article.html", "The article's chart"),
            ("scaling.html", "Optimal learning rate against batch size"),
            ("optimum.html", "Objective against learning rate, per batch size"),
            ("heatmap_objective.html", "Heat map of the objective"),
            ("heatmap_val_loss.html", "Heat map of the validation loss"),
            ("generalization.html", "Generalization: validation loss and gap"),
            ("heatmap_gap.html", "Heat map of the generalization gap"),
            ("noise.html", "Gradient noise scale"),
            ("critical.html", "Steps to a target and the critical batch size"),
            ("sharpness.html", "Sharpness"))]
    s = view.scaling
    records = view.records
    noise = figures.noise_info(s)
    sharp = figures.sharpness_info(records)
    crit = figures.critical_info(C.critical_all(
        records, view.spec.analysis.target if view.spec is not None else ()))
    return [
        Page("article.html", "The article's chart",
             f"{figures.final_words(label)} ({label}: "
             f"{_OBJECTIVE_MEANS.get(view.objective, view.objective)}) "
             "against batch size, one line per learning rate, both axes "
             f"log-scaled. With repeats: the mean over seeds, its {analysis.BOOTSTRAP_WORDS} "
             "as a band, and each single run as a faint dot. Diverged cells have no loss and "
             "are not drawn.",
             figures.article_figure(figures.article_info(records, label))),
        Page("scaling.html", "Optimal learning rate against batch size",
             "lr*(B), the best grid learning rate refined by a smooth fit in log(lr), with its "
             "95% interval (seeds resampled within each cell); the fitted power law "
             "lr* ~ B^alpha; the inverse, constant, square-root and linear rules drawn through "
             "the fit's centre; McCandlish et al.'s lr_max / (1 + B_noise / B); and the "
             "measured noise scale where the study recorded it.",
             figures.scaling_figure(figures.scaling_info(s, view.optimizer))),
        Page("optimum.html", "Objective against learning rate, per batch size",
             f"Mean {label} over seeds against learning rate, one line per batch size, with "
             "the smooth fit that refines each optimum and its minimum.",
             figures.optimum_figure(figures.optimum_info(records, s, label))),
        Page("heatmap_objective.html", "Heat map of the objective",
             f"Mean {label} over seeds for each batch size x learning rate cell (colour on a "
             f"log scale), with its {analysis.BOOTSTRAP_WORDS}. Diverged cells are hatched and "
             "labelled, never coloured. Outlined: the grid learning rates within each batch "
             "size's plateau of good ones.",
             figures.heatmap_figure(figures.heatmap_info(
                 records, "objective", label,
                 {p.batch_size: p.plateau for p in s.optima.points if p.plateau is not None}))),
        Page("heatmap_val_loss.html", "Heat map of the validation loss",
             "Mean held-out validation loss after training, per cell, with its interval; "
             "diverged cells hatched and labelled.",
             figures.heatmap_figure(figures.heatmap_info(records, "val_loss", val))),
        Page("generalization.html", "Generalization: validation loss and gap",
             "Validation loss and the gap (validation - final training loss) against batch "
             "size, one line per learning rate, means over seeds with interval bands.",
             figures.panels_figure(figures.generalization_info(records, label))),
        Page("heatmap_gap.html", "Heat map of the generalization gap",
             "Mean validation - training loss per cell, with its interval; a positive gap is "
             "overfitting.",
             figures.heatmap_figure(figures.heatmap_info(records, "gap", gap))),
        Page("noise.html", "Gradient noise scale",
             "B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018) per cell against batch "
             "size, one line per learning rate, with the predicted critical batch size and the "
             "B_noise fitted to lr*(B).",
             figures.panels_figure(noise) if noise is not None else None,
             None if noise is not None else f"no trial recorded a noise scale "
             f"({R.NOISE_SCALE}); {_ANALYSIS_HINT}"),
        Page("critical.html", "Steps to a target and the critical batch size",
             "The fewest optimizer steps to the target training loss at each batch size (over "
             "learning rates; the seed-mean step curve), against the examples B x steps, with "
             "McCandlish et al.'s fitted front S = S_min (1 + B_crit / B); see study query "
             "critical-batch.",
             figures.critical_figure(crit) if crit is not None else None,
             None if crit is not None else "no trial recorded a step curve that reached the "
             f"target ({R.STEP_CURVE}); set analysis.curve_every or analysis.target"),
        Page("sharpness.html", "Sharpness",
             "The top Hessian eigenvalue of the training loss after training against batch "
             "size and learning rate, with 2/lr, the stability limit of gradient descent "
             "(Cohen et al. 2021; Keskar et al. 2017 on large batches and sharp minima, Dinh et "
             "al. 2017 on why sharpness alone is not generalization).",
             figures.panels_figure(sharp) if sharp is not None else None,
             None if sharp is not None else f"no trial recorded {R.SHARPNESS}; {_ANALYSIS_HINT}"),
    ]


def _axes(view: StudyView) -> list[str] | None:
    """Batch size and learning rate when the study has both (the design card's axes)."""
    from study.space import BATCH_SIZE, LEARNING_RATE

    wanted = [BATCH_SIZE, LEARNING_RATE]
    return wanted if all(p in view.params for p in wanted) else None


OptunaPlot = Callable[["optuna.Study", "list[str] | None"], "go.Figure"]


def _optuna_plots() -> list[tuple[str, str, str, OptunaPlot, int]]:
    """(file, title, caption, plot, completed trials it needs) for Optuna's own figures."""
    from optuna import visualization as v

    return [
        ("contour.html", "Contour: batch size x learning rate",
         "Optuna's plot_contour of the objective over batch size and learning rate, both on "
         "log axes (they are log-scaled distributions); dots are completed trials.",
         lambda s, p: v.plot_contour(s, params=p), 2),
        ("slice.html", "Slice plots",
         "Optuna's plot_slice: the objective of every completed trial against each parameter.",
         lambda s, p: v.plot_slice(s, params=p), 1),
        ("history.html", "Optimization history",
         "Optuna's plot_optimization_history: the objective by trial number and the best so far.",
         lambda s, p: v.plot_optimization_history(s), 1),
        ("importances.html", "Parameter importances",
         "Optuna's plot_param_importances: how much of the objective's variance each parameter "
         "explains (fANOVA).",
         lambda s, p: v.plot_param_importances(s), 2),
        ("intermediate.html", "Learning curves",
         "Optuna's plot_intermediate_values: the objective reported after every epoch.",
         lambda s, p: v.plot_intermediate_values(s), 1),
        ("parallel.html", "Parallel coordinates",
         "Optuna's plot_parallel_coordinate: each completed trial as a line through its "
         "parameters and objective.",
         lambda s, p: v.plot_parallel_coordinate(s), 1),
        ("rank.html", "Rank plot",
         "Optuna's plot_rank: completed trials over batch size and learning rate, coloured by "
         "the rank of their objective.",
         lambda s, p: v.plot_rank(s, params=p), 2),
    ]


def optuna_page_files() -> list[str]:
    """The page files of Optuna's own figures, in the report's order."""
    return [file for file, *_ in _optuna_plots()]


def optuna_pages(study: optuna.Study, view: StudyView, only: str | None = None,
                 note: str | None = None) -> list[Page]:
    """Optuna's own figures (only the page file `only`, when given) of `study` (the study,
    or `plot_study`'s copy, whose `note` says what it leaves out); one that cannot be
    drawn for this study says why, in the index."""
    complete = sum(r.state == "COMPLETE" for r in view.records)
    axes = _axes(view)
    pages = []
    for file, title, caption, plot, needs in _optuna_plots():
        if only is not None and file != only:
            continue
        if complete < needs:
            pages.append(Page(file, title, caption, None,
                              f"needs {needs} completed trial(s), the study has {complete}"))
            continue
        try:
            fig = plot(study, axes)
        except (ValueError, RuntimeError) as e:
            # Optuna refuses some studies outright (e.g. importances when no parameter
            # varies); that is a property of the study, shown in the index, not a crash.
            pages.append(Page(file, title, caption, None, f"{type(e).__name__}: {e}"))
            continue
        pages.append(Page(file, title, f"{caption} ({note})" if note else caption, fig))
    return pages


# --------------------------------------------------------------------------- HTML (pure)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
td.diverged { color: #b00020; font-weight: bold;
  background: repeating-linear-gradient(45deg, #eee, #eee 4px, #fff 4px, #fff 8px); }
td.best { outline: 2px solid #00a070; font-weight: bold; }
table.facts td { text-align: left; }
p.conclusion { font-size: 1.1em; background: #f3f8f5; border-left: 4px solid #00a070;
  padding: 0.6em 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.muted { color: #666; } .skipped { color: #8a5a00; }
.plot { height: 560px; }
nav a { margin-right: 1em; }
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        f"<script src=\"{PLOTLY_JS}\"></script>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def figure_div(fig: go.Figure, div_id: str, height: str = "560px") -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                           div_id=div_id, default_height=height))


def figure_html(view: StudyView, page: Page) -> str:
    assert page.figure is not None
    body = (
        f"<nav><a href=\"{INDEX}\">&larr; {html.escape(view.name)}: all figures</a></nav>\n"
        f"<h1>{html.escape(page.title)}</h1>\n"
        f"<p class=\"muted\">{html.escape(page.caption)}</p>\n"
        + figure_div(page.figure, "figure", "80vh")
    )
    return _page(f"{view.name}: {page.title}", body)


def spec_text(spec: Spec) -> str:
    """The stored spec as a TOML spec file: saved as `spec.toml`, `study run --spec
    spec.toml` runs the same study."""
    return to_toml(spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           classes: Sequence[Sequence[str]] | None = None, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, c in enumerate(row):
            cls = classes[i][j] if classes is not None else ""
            attr = f" class=\"{cls}\"" if cls else ""
            cells.append(f"<td{attr}>{html.escape(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f" class=\"{css}\"" if css else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def best_text(view: StudyView) -> str:
    best = analysis.best(view.records)
    if best is None or best.mean is None:
        return "No completed trial yet."
    text = (f"batch_size={best.batch_size}, learning_rate={best.learning_rate:g}: "
            f"{view.objective_label} {best.mean:.4g}")
    interval = analysis.bootstrap_interval(best.values)
    if interval is not None and interval.low is not None and interval.high is not None:
        text += (f" (mean of {interval.n}; {analysis.BOOTSTRAP_WORDS} {interval.low:.4g} .. "
                 f"{interval.high:.4g})")
    else:
        text += f" (mean of {len(best.values)}; single seed)" if len(best.values) == 1 else \
            f" (mean of {len(best.values)})"
    accuracy = analysis.cell_mean(view.records, best.batch_size, best.learning_rate,
                                  "val_accuracy")
    if accuracy is not None:
        text += f"; validation accuracy {accuracy:.4f}"
    return text


def _fmt_interval(value: float, low: float | None, high: float | None, digits: int = 3) -> str:
    if low is None or high is None:
        return f"{value:.{digits}g} (single seed)"
    hi = f"{high:.{digits}g}" if math.isfinite(high) else "unbounded"
    return f"{value:.{digits}g} [{low:.{digits}g}, {hi}]"


def optimum_rows(s: S.Scaling) -> tuple[list[str], list[list[str]]]:
    """The optimum per batch size as a table."""
    header = ["batch size", "best grid lr", "lr* [95% interval]", "how", "runs at best"]
    rows = [[str(p.batch_size), f"{p.grid_lr:g}", _fmt_interval(p.lr, p.low, p.high),
             p.note, str(p.best_runs)] for p in s.optima.points]
    return header, rows


def fit_rows(s: S.Scaling) -> tuple[list[str], list[list[str]]]:
    """alpha with its intervals, then each rule's verdict."""
    header = ["", "alpha", "95% interval", "verdict"]
    rows = []
    f = s.fit
    if f is not None:
        def iv(x: tuple[float, float] | None) -> str:
            return f"[{x[0]:.3f}, {x[1]:.3f}]" if x is not None else "-"
        both = (f.low, f.high) if f.low is not None and f.high is not None else None
        rows.append([f"fit: log lr* = a + alpha log B (B = "
                     f"{', '.join(map(str, f.batch_sizes))})", f"{f.alpha:.3f}", iv(both),
                     f.interval_words])
        rows.append(["  seed bootstrap", "", iv(f.boot), ""])
        rows.append(["  regression t", "", iv(f.regression), ""])
    for v in s.verdicts:
        rows.append([f"{v.hypothesis.name} rule ({v.hypothesis.source})",
                     f"{v.hypothesis.alpha:g}", "", v.word])
    return header, rows


def noise_rows(s: S.Scaling) -> tuple[list[str], list[list[str]]] | None:
    n = s.noise
    if n is None:
        return None
    header = ["batch size", "lr (its best)", "B_simple [95% interval]", "runs"]
    rows = [[str(c.batch_size), f"{c.learning_rate:g}",
             _fmt_interval(c.interval.mean, c.interval.low, c.interval.high),
             str(c.interval.n)] for c in n.at_optimum]
    rows.append(["pooled: predicted critical batch size", "",
                 _fmt_interval(n.critical.mean, n.critical.low, n.critical.high),
                 str(n.critical.n)])
    return header, rows


def index_html(view: StudyView, pages: Sequence[Page], embeds: Sequence[str],
               generated: str) -> str:
    """The index: name, spec, provenance, counts, grid table, best cell, every figure."""
    e = html.escape
    attrs = view.user_attrs
    g = analysis.grid(view.records)
    intervals = analysis.repeats(g)
    header, rows = analysis.grid_rows(g, intervals)
    best = analysis.best(view.records)
    classes = []
    for b in g.batch_sizes:
        row = [""]
        for lr in g.learning_rates:
            cell = g.cell(b, lr)
            cls = "diverged" if cell is not None and cell.mean is None and cell.diverged else ""
            if best is not None and (b, lr) == (best.batch_size, best.learning_rate):
                cls = "best"
            row.append(cls)
        classes.append(row)
    states = analysis.count_by(view.records, "state")
    statuses = analysis.count_by(view.records, "status")
    versions = attrs.get(R.STUDY_VERSIONS) if isinstance(attrs.get(R.STUDY_VERSIONS), dict) \
        else {}
    links = []
    for p in pages:
        if p.figure is not None:
            links.append(f"<li><a href=\"{e(p.file)}\">{e(p.title)}</a>: "
                         f"<span class=\"muted\">{e(p.caption)}</span></li>")
        else:
            links.append(f"<li class=\"skipped\">{e(p.title)}: not drawn ({e(p.skipped or '')})"
                         "</li>")
    prov = [("storage", view.storage), ("created", str(attrs.get(R.STUDY_CREATED, "unknown"))),
            ("git revision", str(attrs.get(R.STUDY_GIT_REVISION, "unknown"))),
            ("report written", generated)]
    prov += [(k, str(v)) for k, v in (versions or {}).items()]
    spec = view.spec
    seeds_words = (f"Each cell: the mean over seeds [{analysis.BOOTSTRAP_WORDS}]; \"(1 run)\": "
                   "only one run finished." if intervals
                   else "Single seed: one run per cell, no interval.")
    headline, noise, caveats = view.conclusion()
    found = f"""<h2>What this study found</h2>
<p class="conclusion"><b>{e(headline)}</b>{(" " + e(noise)) if noise else ""}</p>
{"<p><b>Caveats:</b></p><ul class='caveats'>" + "".join(f"<li>{e(c)}</li>" for c in caveats)
 + "</ul>" if caveats else ""}"""
    scaling_section = ""
    if view.is_grid:
        sc = view.scaling
        oh, orows = optimum_rows(sc)
        fh, frows = fit_rows(sc)
        nrows = noise_rows(sc)
        m = sc.mccandlish
        mc = ""
        if m is not None:
            iv = _fmt_interval(m.b_noise, *m.interval) if m.interval is not None else \
                f"{m.b_noise:.3g}"
            mc = (f"<p>McCandlish et al. 2018: lr*(B) = lr_max / (1 + B_noise / B) fits with "
                  f"lr_max = {m.lr_max:.3g}, B_noise = {e(iv)} (95% seed bootstrap)"
                  + (f" &mdash; at the {m.bound} end of the searched range "
                     f"{m.search[0]:.3g}..{m.search[1]:.3g}: not identified" if m.bound else "")
                  + ".</p>")
        noise_section = ""
        if nrows is not None:
            noise_section = ("<h3>Gradient noise scale B_simple at each batch size's best "
                             "learning rate</h3>\n" + _table(*nrows, css="facts"))
        scaling_section = f"""<h2>Optimal learning rate per batch size</h2>
<p class="muted">The best grid learning rate (lowest mean {e(view.objective_label)}; a learning
rate where any run diverged never is), refined by a smooth fit in log(lr) through it and up to two
neighbours when it is interior; the interval resamples the seeds within every cell and redoes
the refinement ({e(analysis.BOOTSTRAP_WORDS)}).</p>
{_table(oh, orows, css="facts")}
<h2>Scaling law</h2>
{_table(fh, frows, css="facts")}
{mc}
{noise_section}"""
    if view.is_grid:
        grid_section = f"""<h2>Grid: mean {e(view.objective_label)} over seeds</h2>
<p class="muted">Rows: batch size; columns: learning rate. {e(seeds_words)} "diverged": every
run of the cell diverged (no loss); "(n div)": n runs of the cell diverged, the mean is over the
others.</p>
{_table(header, rows, classes)}"""
    else:
        grid_section = (f"<h2>Trials, not a grid</h2>\n<p>The {e(view.sampler)} sampler picks "
                        "batch size and learning rate from ranges: see the contour and slice "
                        "plots, or <code>study query trials</code>.</p>")
    first, rest = (embeds[0], embeds[1:]) if view.is_grid and embeds else ("", embeds)
    body = f"""<h1>Study {e(view.name)}</h1>
<p class="muted">{e(spec.description if spec is not None else "")}</p>
{found}
{f'<div class="embed">{first}</div>' if first else ""}
{scaling_section}
<h2>Best cell</h2>
<p><b>{e(best_text(view))}</b></p>
{grid_section}
<h2>Trials</h2>
<p>{len(view.records)} trials. By state: {e(", ".join(f"{n} {s}" for s, n in states.items()))}.
By outcome: {e(", ".join(f"{n} {s}" for s, n in statuses.items()))}.</p>
<h2>Figures</h2>
<ul>
{chr(10).join(links)}
</ul>
{"".join(f'<div class="embed">{d}</div>' for d in rest)}
<h2>Spec</h2>
<pre>{e(spec_text(spec)) if spec is not None else
      "No spec stored: this study was not made by study run."}</pre>
<h2>Provenance</h2>
{_table(["what", "value"], prov, css="facts")}
"""
    return _page(f"Study {view.name}", body)


def summary_markdown(view: StudyView, index: Path | None) -> str:
    """The note shown on the study in optuna-dashboard."""
    g = analysis.grid(view.records)
    intervals = analysis.repeats(g)
    header, rows = analysis.grid_rows(g, intervals)
    seeds = f"[{analysis.BOOTSTRAP_WORDS}]" if intervals else "(single seed: no interval)"
    grid_lines = [f"Mean {view.objective_label} over seeds {seeds} (rows: batch size):", "",
                  *_markdown(header, rows)] \
        if view.is_grid else [f"The {view.sampler} sampler searched ranges, not a grid."]
    states = analysis.count_by(view.records, "status")
    headline, noise, caveats = view.conclusion()
    found = [f"**{headline}**" + (f" {noise}" if noise else "")]
    if caveats:
        found += ["", "Caveats:", *(f"- {c}" for c in caveats)]
    if view.is_grid:
        found += ["", "Optimal learning rate per batch size:", "",
                  *_markdown(*optimum_rows(view.scaling)), "", *_markdown(*fit_rows(view.scaling))]
        nrows = noise_rows(view.scaling)
        if nrows is not None:
            found += ["", *_markdown(*nrows)]
    lines = [
        f"## {view.name}: summary by `study report`",
        "",
        *found,
        "",
        f"**Best cell:** {best_text(view)}",
        "",
        f"**Trials:** {len(view.records)} ("
        + ", ".join(f"{n} {s}" for s, n in states.items()) + "), as of "
        + datetime.datetime.now().isoformat(timespec="seconds")
        + "; `study report` and each finished `study run` refresh this note.",
        "",
        *grid_lines,
        "",
        "The figures `study report` stores are on the study's main page"
        + (f"; every figure is in `{index}`." if index is not None else "."),
        f"Git revision: `{view.user_attrs.get(R.STUDY_GIT_REVISION, 'unknown')}`.",
        "",
        NOTE_END,
    ]
    return "\n".join(lines)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").strip() or " "

    return ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(c) for c in r) + " |" for r in rows)]


def merged_note(ours: str, existing: str) -> str:
    """Our summary on top; whatever a user wrote below the previous summary is kept."""
    if NOTE_END in existing:
        existing = existing.split(NOTE_END, 1)[1]
    rest = existing.strip("\n")
    return ours + ("\n\n" + rest if rest else "") + "\n"


# --------------------------------------------------------------------------- writing


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # a browser reloading mid-write never sees half a page
    return path


def write_plotly_js(out: Path) -> Path:
    """plotly.js, from the installed plotly package, once for every page."""
    from plotly.offline import get_plotlyjs

    return _write(out / PLOTLY_JS, get_plotlyjs())


def push_to_dashboard(study: optuna.Study, view: StudyView, pages: Sequence[Page],
                      index: Path | None) -> None:
    """Store the article chart, the objective heat map and a summary note on the study."""
    from optuna_dashboard import get_note, save_note, save_plotly_graph_object

    by_file = {p.file.removesuffix(".html"): p for p in pages}
    for key, graph_id in DASHBOARD_FIGURES.items():
        fig = by_file[key].figure
        if fig is not None:
            save_plotly_graph_object(study, fig, graph_object_id=graph_id)
    save_note(study, merged_note(summary_markdown(view, index), get_note(study)))


def refresh_note(url: str, study_name: str) -> bool:
    """Rewrite the summary note of a study that has one (stored by `study report`) from its
    trials now, keeping what a user wrote below it and the report folder it names: a
    finished run calls this, so the note never describes fewer trials than the study has.
    Returns whether there was a note to refresh; a study without one is not touched."""
    import re

    import optuna
    from optuna_dashboard import get_note, save_note

    from study.storage import mask, open_storage

    study = optuna.load_study(study_name=study_name,
                              storage=open_storage(url, create_schema=False))
    existing = get_note(study)
    if NOTE_END not in existing:
        return False
    found = re.search(r"every figure is in `([^`\n]+)`", existing.split(NOTE_END, 1)[0])
    index = Path(found.group(1)) if found else None
    view = load_view(study, mask(url), url)
    save_note(study, merged_note(summary_markdown(view, index), existing))
    return True


def prepare_out(out: Path) -> None:
    """Make `out` (with its parents) and prove a file can be written in it, or say in one
    line why not, before anything is drawn or stored on the study."""
    import tempfile

    from study.errors import UsageError

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise UsageError(f"--out: cannot write to {out}: {e.strerror or e}") from None


# Where `study report` writes by default: a folder per study under this one.
REPORTS = Path("dashboards")


def report_dir(study_name: str) -> Path:
    """The default folder of a study's report, `dashboards/<study>/`, so that two studies'
    reports both survive. A study name is anyone's string: a name that is not a plain
    file name (a slash, `..`, a control character, a leading dot or dash) becomes one,
    with a hash of the name so that two such names never share a folder."""
    import hashlib
    import re

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)[:80].lstrip(".-")
    if safe != study_name or not safe:
        digest = hashlib.sha256(study_name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe or 'study'}-{digest}"
    return REPORTS / safe


def write_report(url: str, study_name: str | None, out: Path | None = None, *,
                 dashboard: bool = True) -> Report:
    """Write every figure and the index to `out` (default `report_dir(<study>)`); store our
    figures on the study."""
    import optuna

    from study.storage import mask, open_storage
    from study.store import study_name as resolve

    start = time.monotonic()
    name = resolve(url, study_name)  # read-only: a wrong name writes nothing
    if out is None:
        out = report_dir(name)
    prepare_out(out)
    study = optuna.load_study(study_name=name, storage=open_storage(url, create_schema=False))
    view = load_view(study, mask(url), url)
    plots, note = plot_study(study, url)
    pages = our_pages(view) + optuna_pages(plots, view, note=note)

    out.mkdir(parents=True, exist_ok=True)
    files = [write_plotly_js(out)]
    for page in pages:
        target = out / page.file
        if page.figure is None:
            target.unlink(missing_ok=True)  # an old figure must not pass for this study's
            continue
        files.append(_write(target, figure_html(view, page)))
    by_file = {p.file: p for p in pages}
    embeds = [figure_div(fig, f"embed-{f.removesuffix('.html')}")
              for f in EMBEDDED if (fig := by_file[f].figure) is not None]
    generated = datetime.datetime.now().isoformat(timespec="seconds")
    index = _write(out / INDEX, index_html(view, pages, embeds, generated))
    files.append(index)
    if dashboard:
        push_to_dashboard(study, view, pages, index.resolve())
    return Report(out, name, files, {p.file: p.skipped for p in pages if p.skipped},
                  len(view.records), time.monotonic() - start, dashboard,
                  sum(f.stat().st_size for f in files))
