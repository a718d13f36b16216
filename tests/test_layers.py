"""The layer contracts of pyproject.toml's [tool.importlinter] (`make lint` runs them): they
hold on the tree, and each fails, naming itself, on a copy of the package with one
forbidden import planted in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.helpers import ROOT

LINT = Path(sys.executable).parent / "lint-imports"
CONTRACTS = [c["name"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())
             ["tool"]["importlinter"]["contracts"]]


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the package under `root`, with `root`'s pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root)}  # `study` is this copy, not the installed tree
    started = time.monotonic()
    out = subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
                         cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 15, "lint-imports took 15 s or more"
    return out


def test_every_contract_is_kept_on_the_tree() -> None:
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in out.stdout
    shown = " ".join(out.stdout.split())  # lint-imports wraps long names at 80 columns
    for name in CONTRACTS:
        assert f"{' '.join(name.split())} KEPT" in shown, name


# (module, the import planted in it, the contract it breaks, the line lint-imports shows)
PLANTED = [
    ("analysis.py", "import study.runner", "Analysis is pure",
     "study.analysis -> study.runner"),
    ("runner.py", "import study.api", "Layers: nothing imports upward",
     "study.runner -> study.api"),
    ("query.py", "import study.report", "Layers: nothing imports upward",
     "study.query -> study.report"),
    ("report.py", "import study.cli", "Nothing imports the command line",
     "study.report -> study.cli"),
    ("spec.py", "import study.data", "spec and errors at the bottom", "study.spec -> study.data"),
    ("trainers/keras.py", "from study import storage", "Trainers train",
     "study.trainers.keras -> study.storage"),
    ("trainers/schedule.py", "import optuna", "Trainers never import Optuna themselves",
     "study.trainers.schedule -> optuna"),
    ("scaling.py", "import optuna", "Analysis never imports Optuna itself",
     "study.scaling -> optuna"),
    ("query.py", "import sqlalchemy", "SQLAlchemy only behind the storage seam",
     "study.query -> sqlalchemy"),
]


@pytest.mark.parametrize(("module", "line", "contract", "shown"), PLANTED,
                         ids=[f"{p[0]}: {p[1]}" for p in PLANTED])
def test_a_planted_import_breaks_its_contract(tmp_path: Path, module: str, line: str,
                                              contract: str, shown: str) -> None:
    shutil.copytree(ROOT / "study", tmp_path / "study",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "study" / module).open("a") as f:
        f.write(f"\n{line}  # planted\n")
    out = lint(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    broken = out.stdout.split("Broken contracts", 1)[1]
    assert any(name.startswith(contract) for name in CONTRACTS), contract
    # The report names the contract (lint-imports wraps long names at 80 columns) and the
    # planted import.
    assert contract in broken.replace("\n", " "), broken
    assert shown in broken, broken
