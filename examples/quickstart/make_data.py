"""Write mine.csv, the quickstart's small regression set (committed; this script is how
it was made, and remakes it bit for bit).

300 rows, four inputs drawn uniformly in [-1, 1], and a target no linear model fits:
y = sin(2 a) + b^2 - c d + N(0, 0.1^2) noise, rounded to four decimals so that the file
is the same on every machine.

    python make_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROWS = 300


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=(ROWS, 4)).round(4)
    y = (np.sin(2 * x[:, 0]) + x[:, 1] ** 2 - x[:, 2] * x[:, 3]
         + rng.normal(0.0, 0.1, size=ROWS)).round(4)
    lines = ["a,b,c,d,y"]
    lines += [",".join(f"{v:.4f}" for v in (*row, target)) for row, target in zip(x, y, strict=True)]
    (Path(__file__).parent / "mine.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
