"""How `study` loads TensorFlow: quietly, and on the command line without the modules
its import loads only for features `study` never uses (checked in fresh processes:
TensorFlow loads once per process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from study.trainers import _tf
from tests.helpers import ROOT

PROBE = """
import json, sys
from study.trainers import _tf
if sys.argv[1] == "lean":
    _tf.lean()
tf = _tf.tensorflow()
loaded = sorted(name for name in _tf.UNUSED if name in sys.modules)
import sklearn  # hidden while TensorFlow loaded, importable after
from keras.src.wrappers import fixes
print(json.dumps({"loaded": loaded, "keras_sees": fixes.sklearn is not None,
                  "sklearn": sklearn.__name__, "tf": bool(tf.constant(1).numpy())}))
"""


def probe(mode: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.slow
def test_the_command_line_loads_tensorflow_without_scikit_learn() -> None:
    assert _tf.UNUSED == ("sklearn",)
    lean = probe("lean")
    assert lean == {"loaded": [], "keras_sees": False, "sklearn": "sklearn", "tf": True}
    # The library's import is left whole: Keras' scikit-learn wrappers keep working in a
    # notebook (and the lean run above did hide something that is normally loaded).
    whole = probe("whole")
    assert whole == {"loaded": ["sklearn"], "keras_sees": True, "sklearn": "sklearn", "tf": True}
