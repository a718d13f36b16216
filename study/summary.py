"""The closing summary of `study run`: lines of text from a study's records, nothing printed.

A grid study is summarized as its grid: batch size x learning rate, each cell's mean
over seeds, the best cell, the scaling headline and the refinement rounds. A study
sampled by TPE, random or QMC has no grid: its batch sizes and learning rates are each
trial's own, so a table of them would be one sparse row per batch size, and the grid's
advice (its edges, "widen the grid") would speak of a grid it does not have. Its
summary is the best trials, ranked by the objective.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from study.analysis import TrialRecord
    from study.spec import Spec

# How many trials a sampled study's summary ranks (`study query trials` shows them all).
BEST_TRIALS = 10

OBJECTIVE_WORDS = {
    "train_loss": "final training loss (last epoch's mean, the article's metric)",
    "val_loss": "validation loss after training",
    "val_error": "validation error after training (1 - validation accuracy)",
}
SAMPLER_WORDS = {"tpe": "TPE", "random": "random", "qmc": "QMC"}


def summary_lines(records: Sequence[TrialRecord], spec: Spec, study_attrs: Mapping[str, Any],
                  name: str, where: str) -> list[str]:
    """What `study run` prints when it ends, a line each, starting with a blank one:
    the grid (or, for a sampled study, the best trials), then the outcomes' tally.

    `study_attrs`: the study's user attributes (a grid's refinement rounds are there);
    `where`: the storage URL as it may be shown (its password masked).
    """
    lines = [""]
    lines += grid_lines(records, spec, study_attrs) if spec.is_grid \
        else best_trial_lines(records, spec)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines += ["", f"Results: study {name!r} in {where} ({tally})."]
    return lines


def grid_lines(records: Sequence[TrialRecord], spec: Spec, study_attrs: Mapping[str, Any]
               ) -> list[str]:
    """A grid study's table, best cell, scaling headline and refinement rounds."""
    from study import analysis, refine

    seeds = sorted({r.seed for r in records if r.seed is not None and r.status == "complete"})
    g = analysis.grid(records)
    intervals = analysis.repeats(g)
    spread = f" [{analysis.BOOTSTRAP_WORDS}]" if intervals else ""
    lines = [f"Objective: {OBJECTIVE_WORDS[spec.train.objective]}; mean over {len(seeds)} "
             f"seed(s){spread}. Rows: batch size."]
    header, rows = analysis.grid_rows(g, intervals)
    lines += analysis.render_table(header, rows).splitlines()
    best = analysis.best(records)
    if best is not None and best.mean is not None:
        accuracy = analysis.cell_mean(records, best.batch_size, best.learning_rate,
                                      "val_accuracy")
        lines += ["", f"Best cell: batch_size={best.batch_size}, "
                  f"learning_rate={best.learning_rate:g}: {best.mean:.4g} "
                  f"(mean of {len(best.values)})"
                  + (f"; validation accuracy {accuracy:.4f}" if accuracy is not None else "")]
    if len(g.batch_sizes) > 1:
        from study import scaling

        s = scaling.scaling(records, spec.train.objective, tolerance=spec.analysis.tolerance)
        lines.append(f"Scaling (more: study query scaling): "
                     f"{scaling.headline(s, spec.train.optimizer)}")
        plateau = scaling.plateau_sentence(s)
        if plateau:
            lines.append(plateau)
    rounds, stop = refine.rounds_from_attrs(study_attrs), refine.stop_from_attrs(study_attrs)
    lines += refine.describe(rounds, stop, len(spec.search.seeds))
    return lines


def best_trial_lines(records: Sequence[TrialRecord], spec: Spec,
                     limit: int = BEST_TRIALS) -> list[str]:
    """A sampled study's best completed trials, lowest objective first, with the range
    its trials sampled; no grid, so no grid's advice."""
    from study import analysis

    objective = spec.train.objective
    sampler = SAMPLER_WORDS.get(spec.search.sampler, spec.search.sampler)
    scored = [(r.value, r) for r in records if r.status == "complete" and r.value is not None]
    done = [r for _, r in sorted(scored, key=lambda vr: (vr[0], vr[1].number))]
    shown = done[:limit]
    lines = [f"Objective: {OBJECTIVE_WORDS[objective]}. {sampler} sampler: the {len(shown)} "
             f"best of {len(done)} completed trials ({len(records)} in all)."]
    if not shown:
        return lines
    accuracy = any(r.val_accuracy is not None for r in shown) and objective != "val_error"
    header = ["rank", "trial", "batch_size", "learning_rate", "seed", objective]
    header += ["val_accuracy"] if accuracy else []
    rows = []
    for rank, r in enumerate(shown, start=1):
        row = [str(rank), str(r.number), _text(r.batch_size), _text(r.learning_rate),
               _text(r.seed), f"{r.value:.4g}"]
        if accuracy:
            row.append("-" if r.val_accuracy is None else f"{r.val_accuracy:.4f}")
        rows.append(row)
    lines += analysis.render_table(header, rows).splitlines()
    best = shown[0]
    lines += ["", f"Best trial: #{best.number}, batch_size={_text(best.batch_size)}, "
              f"learning_rate={_text(best.learning_rate)}, seed {_text(best.seed)}: "
              f"{best.value:.4g}"
              + (f"; validation accuracy {best.val_accuracy:.4f}"
                 if best.val_accuracy is not None and objective != "val_error" else "")]
    sampled = [r for r in records if r.batch_size is not None and r.learning_rate is not None]
    if sampled:
        bs = [r.batch_size for r in sampled if r.batch_size is not None]
        lr = [r.learning_rate for r in sampled if r.learning_rate is not None]
        lines.append(f"Sampled: batch size {min(bs)}..{max(bs)}, learning rate "
                     f"{min(lr):.3g}..{max(lr):.3g} ({len(sampled)} trials).")
    return lines


def _text(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"
