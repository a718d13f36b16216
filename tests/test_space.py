from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution, IntDistribution

from study import space
from study.spec import load_spec


def test_distributions_are_log_scaled() -> None:
    dists = space.distributions(load_spec("article"))
    assert dists["batch_size"] == IntDistribution(16, 256, log=True)
    assert dists["learning_rate"] == FloatDistribution(0.0001, 0.1, log=True)
    assert dists["seed"] == IntDistribution(0, 0)


def test_grid_cells_cover_the_product_grouped_by_batch_size() -> None:
    cells = space.grid_cells(load_spec("article", ["search.seeds=[0,1]"]))
    assert len(cells) == 5 * 4 * 2 == len(set(cells))
    assert [c.batch_size for c in cells] == sorted(c.batch_size for c in cells)
    assert {(c.batch_size, c.learning_rate) for c in cells} == {
        (b, lr) for b in (16, 32, 64, 128, 256) for lr in (0.1, 0.01, 0.001, 0.0001)}


def test_cell_of_round_trips_params() -> None:
    cell = space.Cell(32, 0.01, 2)
    assert space.cell_of(cell.params()) == cell
    assert space.cell_of({"batch_size": 32}) is None


def test_samplers_and_pruners() -> None:
    grid = space.make_sampler(load_spec("article"))
    assert isinstance(grid, optuna.samplers.GridSampler)
    tpe = load_spec("article", ["search.sampler=tpe", "search.n_trials=5",
                                "search.batch_size={low=16, high=256}",
                                "search.learning_rate={low=1e-4, high=0.1}"])
    assert isinstance(space.make_sampler(tpe), optuna.samplers.TPESampler)
    # Trials running in the same claim or on other workers count as bad results while
    # TPE samples, so concurrent trials are not put on one point.
    assert space.make_sampler(tpe)._constant_liar
    assert "seed" not in space.distributions(tpe)
    assert space.seed_for_trial(load_spec("article", ["search.seeds=[3,4]"]), 5) == 4
    assert isinstance(space.make_pruner(load_spec("article")), optuna.pruners.NopPruner)
    median = load_spec("article", ["search.pruner=median"])
    assert isinstance(space.make_pruner(median), optuna.pruners.MedianPruner)
