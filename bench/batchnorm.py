"""`make bench`'s "BatchNormalization MLP, population vs keras" section.

A builder's MLP with BatchNormalization (`bn_mlp` below: Dense 64 -> BatchNormalization
-> relu -> Dense 32 -> BatchNormalization -> relu -> Dense 1, Keras' defaults) on the
article's synthetic data: its grid (5 batch sizes x 4 learning rates) x 5 seeds, 100
trials of EPOCHS epochs, trained once by each trainer through a real `study run` in a
process of its own (SQLite in a temporary directory, no XLA compile cache: the
population trainer compiles as a first run does). Each wall time is the process's,
start to exit. Target: the population trainer at least 10x faster.

    python bench/batchnorm.py       # prints the section (about 5 min on 2 quiet cores)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:batchnorm:begin -->", "<!-- bench:batchnorm:end -->"
BUILDER = "bench.batchnorm:bn_mlp"
SEEDS = 5
EPOCHS = 10
TARGET = 10.0


def bn_mlp(shape: Sequence[int], outputs: int) -> Any:
    """The bench's model, as a user writes it (every Dense with its bias)."""
    from study.trainers._tf import tensorflow

    tensorflow()
    import keras

    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=tuple(shape)),
        layers.Dense(64), layers.BatchNormalization(), layers.Activation("relu"),
        layers.Dense(32), layers.BatchNormalization(), layers.Activation("relu"),
        layers.Dense(outputs)])


def run(trainer: str, seeds: int = SEEDS, epochs: int = EPOCHS) -> tuple[float, float, float]:
    """One `study run` of the grid with `trainer` in a child process: its wall seconds,
    and the load average before and after it."""
    env = {k: v for k, v in os.environ.items() if k not in ("STUDY_XLA_CACHE", "TF_XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["STUDY_XLA_CACHE"] = "off"
    with tempfile.TemporaryDirectory(prefix="study-bench-bn-") as tmp:
        argv = [sys.executable, "-m", "study", "run", "--storage", f"sqlite:///{tmp}/study.db",
                "--trainer", trainer, "--epochs", str(epochs),
                "--seeds", ",".join(map(str, range(seeds))),
                "--set", f"model.builder='{BUILDER}'"]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
    said = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"bench: batchnorm ({trainer}) failed:\n{said[-3000:]}")
    if trainer == "population" and "training with the keras trainer" in said:
        raise SystemExit(f"bench: batchnorm: the population trainer fell back:\n{said[-3000:]}")
    print(f"  {'BatchNormalization MLP':28s} {trainer:10s} {wall:8.1f} s  "
          f"load {load:.1f}->{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return wall, load, os.getloadavg()[0]


def section(seeds: int = SEEDS, epochs: int = EPOCHS) -> str:
    trials = 20 * seeds
    population = run("population", seeds, epochs)
    keras = run("keras", seeds, epochs)
    ratio = keras[0] / population[0]
    lines = [
        "### BatchNormalization MLP, population vs keras",
        "",
        f"A builder's MLP (bench/batchnorm.py `bn_mlp`: Dense 64 -> BatchNormalization -> relu "
        f"-> Dense 32 -> BatchNormalization -> relu -> Dense 1) on the article's data, its "
        f"grid x {seeds} seeds ({trials} trials), {epochs} epochs each: one `study run` per "
        f"trainer, a process of its own, wall time start to exit (no XLA compile cache). "
        f"The population trainer normalizes each member by its own batch's statistics, so "
        f"each batch size is a program of its own. Target: population >= {TARGET:.0f}x faster.",
        "",
        "| trainer | trials | wall | per trial | load before -> after |",
        "|---|---:|---:|---:|---|",
    ]
    for name, (wall, before, after) in (("keras", keras), ("population", population)):
        lines.append(f"| {name} | {trials} | {wall:.1f} s | {wall / trials:.3f} s | "
                     f"{before:.1f} -> {after:.1f} |")
    lines += ["", f"Ratio {ratio:.1f}x (target {TARGET:.0f}x: "
              f"{'met' if ratio >= TARGET else 'missed'})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(section())
