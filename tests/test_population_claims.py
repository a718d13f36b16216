"""The population trainer's claims: sized by measured speed, compiled once.

A claim's results are recorded only when it ends, so its size bounds what a kill
loses; its programs must be the first claim's, or every claim would compile again.
"""

from __future__ import annotations

import numpy as np
import pytest

from study.data import make_dataset
from study.spec import load_spec
from study.trainers import TrialConfig
from study.trainers.population import (
    PopulationTrainer,
    _programs,
    plan_groups,
    tile_size,
    train_population,
)
from study.trainers.population.layout import OWN_PROGRAM

pytestmark = pytest.mark.slow

# A model shape no other test uses, so the programs traced here are this module's own.
SPEC = load_spec("article", ["data.n_train=200", "data.n_val=50", "train.epochs=2",
                             "model.hidden=[7, 5]", "search.batch_size=[16, 32, 64]",
                             "search.learning_rate=[0.01, 0.001]"])
DATA = make_dataset(SPEC.data)
# 3 batch sizes x 2 learning rates x 8 seeds, in the runner's (grid) order.
CONFIGS = [TrialConfig.of(SPEC, bs, lr, seed) for bs in (16, 32, 64) for lr in (0.001, 0.01)
           for seed in range(8)]


def traces() -> dict[object, int]:
    return {key: program.experimental_get_tracing_count() for key, program in _programs.items()
            if key.layout.sizes == (10, 7, 5, 1)}


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # One tile per round, as on a one-core machine: small claims, the same on any host.
    monkeypatch.setenv("STUDY_THREADS", "1")


def test_later_claims_run_the_first_claims_program(one_thread: None) -> None:
    trainer = PopulationTrainer()
    pending, sizes = list(CONFIGS), []
    while pending:
        # Too little time for more than the least claim: one tile (one core).
        k = trainer.claim_size(pending, DATA.n_train, 0.001)
        trainer.train(pending[:k], DATA)
        sizes.append(k)
        pending = pending[k:]
        if len(sizes) == 1:
            first = traces()
    # The tile of the first claim (all 48 in sight: two tiles of 24), one program.
    assert trainer.tile == tile_size(48) == 24 and sizes == [24, 24]
    assert list(first.values()) == [1]
    # Claims of other sizes (a padded tile) and batch sizes (64 alone would choose a
    # micro-batch of its own) run that program too.
    for claim in (CONFIGS[40:45], CONFIGS[47:]):
        results = trainer.train(claim, DATA)
        assert [r.status for r in results] == ["complete"] * len(claim)
    assert traces() == first, "a later claim compiled again"
    # The counter sees a trace: a call of another tile size compiles a new program shape.
    train_population(CONFIGS[:5], DATA)
    assert sum(traces().values()) == 2


def test_a_claim_trains_as_its_members_alone_would(one_thread: None) -> None:
    trainer = PopulationTrainer()
    trainer.claim_size(CONFIGS, DATA.n_train, 30.0)
    # Three members in a tile of 24, one of them at a micro-batch not its own.
    picked = [CONFIGS[0], CONFIGS[20], CONFIGS[40]]
    together = trainer.train(picked, DATA)
    for c, r in zip(picked, together, strict=True):
        (alone,) = train_population([c], DATA)
        np.testing.assert_allclose(r.train_curve, alone.train_curve, rtol=1e-5)
        assert r.full_train_loss == pytest.approx(alone.full_train_loss, rel=1e-5)


def test_claims_grow_from_the_measured_speed(one_thread: None) -> None:
    trainer = PopulationTrainer()
    n = DATA.n_train
    # Nothing measured yet: one round of tiles (one tile per core), however much time.
    assert trainer.claim_size(CONFIGS, n, 1e9) == 24
    trainer.train(CONFIGS[:24], DATA)
    (speed,) = trainer.speeds.values()
    assert speed > 0
    # One round of 24 costs 2 epochs x speed; the claim is the most tiles that fit.
    round_cost = 2 * speed
    assert trainer.claim_size(CONFIGS[24:], n, 0.5 * round_cost) == 24  # never below a round
    assert trainer.claim_size(CONFIGS[24:], n, 1.01 * round_cost) == 24
    # Past the first round the rest (24) is one more tile: all of it fits in two rounds.
    assert trainer.claim_size(CONFIGS, n, 1.99 * round_cost) == 24
    assert trainer.claim_size(CONFIGS, n, 2.01 * round_cost) == 48
    # Groups without a measurement of their own are taken to be as slow as the slowest.
    four = load_spec("article", ["data.n_train=200", "model.hidden=[7, 5]", "train.epochs=4",
                                 "search.batch_size=[16]"])
    longer = [TrialConfig.of(four, 16, 0.01, s) for s in range(48)]
    assert len(plan_groups(longer, n, trainer.micros)) == 1
    assert trainer.claim_size(longer, n, 3.99 * round_cost) == 24
    assert trainer.claim_size(longer, n, 4.01 * round_cost) == 48


def test_micro_batches_weigh_the_whole_study_and_claims_stay_under_the_limit(
        one_thread: None) -> None:
    # Each of two batch sizes has OWN_PROGRAM member epochs in the study, far more than
    # a claim of 40 holds: each gets a program of its own all the same.
    study = [TrialConfig.of(SPEC, bs, 0.01, seed) for seed in range(OWN_PROGRAM // 2)
             for bs in (16, 64)]
    trainer = PopulationTrainer(batch_limit=40)
    taken = trainer.claim_size(study, DATA.n_train, 30.0)
    assert [sorted(m) for m in trainer.micros.values()] == [[16, 64]]
    # The tile is the first claim's largest group's (20 of each batch size), and with no
    # speed measured a claim is one round: one tile on one core.
    assert trainer.tile == tile_size(20) == 20 and taken == 20
    # Less work: one program, at the smaller batch size.
    fewer = PopulationTrainer(batch_limit=40)
    fewer.claim_size(study[:OWN_PROGRAM // 2], DATA.n_train, 30.0)
    assert list(fewer.micros.values()) == [[16]] and fewer.tile == tile_size(40)
