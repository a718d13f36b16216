"""Write data.csv, the small regression set of this example (committed; this script is
how it was made, and remakes it bit for bit).

400 rows, five inputs drawn uniformly in [-1, 1], and a target no linear model fits:
y = sin(2 x1) + x2^2 - x3 x4 + 0.5 x5 + N(0, 0.1^2) noise. Values are rounded to four
decimals, so the file is the same on every machine.

    python examples/csv_regression/make_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROWS = 400


def main() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(-1.0, 1.0, size=(ROWS, 5)).round(4)
    y = (np.sin(2 * x[:, 0]) + x[:, 1] ** 2 - x[:, 2] * x[:, 3] + 0.5 * x[:, 4]
         + rng.normal(0.0, 0.1, size=ROWS)).round(4)
    lines = ["x1,x2,x3,x4,x5,y"]
    lines += [",".join(f"{v:.4f}" for v in (*row, target)) for row, target in zip(x, y, strict=True)]
    (Path(__file__).parent / "data.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
