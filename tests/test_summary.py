"""The closing summary: a grid for a grid study, the best trials for a sampled one."""

from __future__ import annotations

from study.analysis import TrialRecord
from study.spec import load_spec
from study.summary import best_trial_lines, summary_lines

GRID = load_spec("article", ["search.batch_size=[16, 64]", "search.learning_rate=[0.1, 0.01]"])
TPE = load_spec("article", ["search.sampler=tpe", "search.n_trials=14",
                            "search.batch_size={low = 16, high = 256}",
                            "search.learning_rate={low=1e-4, high=0.1}",
                            "train.objective=val_loss", "search.pruner=median"])


def trial(number: int, bs: int, lr: float, value: float | None, status: str = "complete",
          seed: int = 0) -> TrialRecord:
    state = {"complete": "COMPLETE", "pruned": "PRUNED"}.get(status, "FAIL")
    return TrialRecord(number, state, bs, lr, seed, value, status, val_loss=value)


def test_a_grid_study_is_summarized_as_its_grid() -> None:
    records = [trial(0, 16, 0.1, 0.5), trial(1, 16, 0.01, 0.2), trial(2, 64, 0.1, 0.4),
               trial(3, 64, 0.01, 0.3)]
    lines = summary_lines(records, GRID, {}, "t", "sqlite:///x.db")
    assert lines[0] == ""
    assert lines[1] == ("Objective: final training loss (last epoch's mean, the article's "
                        "metric); mean over 1 seed(s). Rows: batch size.")
    assert lines[2].split() == ["batch_size", "lr=0.1", "lr=0.01"]
    assert lines[4].split() == ["16", "0.5", "0.2"] and lines[5].split() == ["64", "0.4", "0.3"]
    assert "Best cell: batch_size=16, learning_rate=0.01: 0.2 (mean of 1)" in lines
    assert any(line.startswith("Scaling (more: study query scaling): ") for line in lines)
    assert lines[-2:] == ["", "Results: study 't' in sqlite:///x.db (4 complete)."]


def test_a_sampled_study_is_summarized_by_its_best_trials() -> None:
    records = [trial(n, 16 + 10 * n, 1e-4 * (n + 1), 1.0 - 0.05 * n) for n in range(12)]
    records += [trial(12, 20, 0.05, None, "pruned"), trial(13, 30, 0.07, None, "diverged")]
    lines = summary_lines(records, TPE, {}, "t", "sqlite:///x.db")
    assert lines[1] == ("Objective: validation loss after training. TPE sampler: the 10 best "
                        "of 12 completed trials (14 in all).")
    assert lines[2].split() == ["rank", "trial", "batch_size", "learning_rate", "seed",
                                "val_loss"]
    ranked = [line.split() for line in lines[4:14]]
    assert [row[1] for row in ranked] == [str(n) for n in range(11, 1, -1)]  # best first
    assert ranked[0] == ["1", "11", "126", "0.0012", "0", "0.45"]
    assert "Best trial: #11, batch_size=126, learning_rate=0.0012, seed 0: 0.45" in lines
    assert "Sampled: batch size 16..126, learning rate 0.0001..0.07 (14 trials)." in lines
    text = "\n".join(lines)
    # No grid, so none of a grid's words or advice.
    for grid_only in ("Best cell", "Rows: batch size", "Scaling", "widen the grid", "lr="):
        assert grid_only not in text
    assert lines[-1] == ("Results: study 't' in sqlite:///x.db (12 complete, 1 diverged, "
                         "1 pruned).")


def test_a_sampled_study_without_a_completed_trial_says_so() -> None:
    assert best_trial_lines([trial(0, 16, 0.1, None, "pruned")], TPE) == [
        "Objective: validation loss after training. TPE sampler: the 0 best of 0 completed "
        "trials (1 in all)."]
