"""XLA's persistent compile cache: one directory per machine kind, on by default, off or
moved by STUDY_XLA_CACHE, and entries XLA would fail on removed before it reads them;
the real thing checked in fresh processes (TensorFlow reads its flags as it loads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.trainers import compile_cache as cc
from tests.helpers import ROOT

X86 = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f\n\n" \
      "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\n"


def test_the_key_follows_the_cpu_features_and_tensorflow() -> None:
    avx512 = cc.cpu_features(X86)
    assert avx512.endswith("|avx2 avx512f fpu sse2")
    without = cc.cpu_features(X86.replace(" avx512f", ""))
    assert cc.cache_key(avx512, "2.21.0") != cc.cache_key(without, "2.21.0")
    assert cc.cache_key(avx512, "2.21.0") != cc.cache_key(avx512, "2.22.0")
    assert cc.cache_key(avx512, "2.21.0") == cc.cache_key(avx512, "2.21.0")
    assert "sve" in cc.cpu_features(ARM)
    # This machine's own key is one of these: its flags, read from /proc/cpuinfo.
    assert cc.cache_key() == cc.cache_key(cc.cpu_features(), cc.tensorflow_version())


def test_where_the_cache_lives(tmp_path: Path) -> None:
    key = "k" * 16
    assert cc.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}, key) == tmp_path / "study/xla" / key
    assert cc.cache_dir({cc.CACHE_ENV: str(tmp_path / "mine")}, key) == tmp_path / "mine" / key
    for off in ("off", "0", "", "No", "false"):
        assert cc.cache_dir({cc.CACHE_ENV: off}, key) is None, off
    different = cc.cache_dir({cc.CACHE_ENV: str(tmp_path)}, cc.cache_key(cc.cpu_features(ARM)))
    assert different != cc.cache_dir({cc.CACHE_ENV: str(tmp_path)})


def _flags_after(env: dict[str, str]) -> str:
    """TF_XLA_FLAGS after use_compile_cache() in a fresh interpreter without TensorFlow."""
    code = ("import os; from study.trainers.compile_cache import use_compile_cache; "
            "use_compile_cache(); print(os.environ.get('TF_XLA_FLAGS', ''))")
    base = {k: v for k, v in os.environ.items() if k not in (cc.CACHE_ENV, cc.FLAGS_ENV)}
    out = subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_on_by_default_moved_or_off_by_the_environment(tmp_path: Path) -> None:
    flags = _flags_after({"XDG_CACHE_HOME": str(tmp_path)})
    assert f"{cc.DIRECTORY_FLAG}={tmp_path / 'study/xla' / cc.cache_key()}" in flags
    assert (tmp_path / "study/xla" / cc.cache_key()).is_dir()
    assert f"{cc.DIRECTORY_FLAG}={tmp_path / 'x' / cc.cache_key()}" in \
        _flags_after({cc.CACHE_ENV: str(tmp_path / "x")})
    assert _flags_after({cc.CACHE_ENV: "off", "XDG_CACHE_HOME": str(tmp_path / "y")}) == ""
    assert not (tmp_path / "y").exists()
    # A directory the user gave XLA themselves is theirs.
    own = f"--tf_xla_min_cluster_size=2 {cc.DIRECTORY_FLAG}=/elsewhere"
    assert _flags_after({cc.FLAGS_ENV: own}) == own
    # A cache that cannot be made leaves the cache off rather than failing the run.
    (tmp_path / "file").write_text("")
    assert _flags_after({cc.CACHE_ENV: str(tmp_path / "file")}) == ""


def test_use_compile_cache_is_a_no_op_once_tensorflow_is_loaded(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", sys)  # stands for a loaded TensorFlow
    monkeypatch.setenv(cc.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(cc.FLAGS_ENV, raising=False)
    cc.use_compile_cache()
    assert cc.FLAGS_ENV not in os.environ and not any(tmp_path.iterdir())


def _entry(signature: int, cluster: int, executable: bytes = b"\x7fELF") -> tuple[str, bytes]:
    """A cache file's name and bytes, shaped as XLA writes them."""
    def varint(v: int) -> bytes:
        out = b""
        while True:
            out += bytes([(v & 0x7F) | (0x80 if v > 0x7F else 0)])
            v >>= 7
            if not v:
                return out

    def field(number: int, payload: bytes | int) -> bytes:
        if isinstance(payload, int):
            return varint(number << 3) + varint(payload)
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    key = field(1, signature) + field(2, cluster) + field(3, b"XLA_CPU_JIT") + field(4, b"study")
    data = field(1, key) + field(2, b"\x0a\x03hlo") + field(3, executable)
    return f"study__{signature}__{cluster}__XLA_CPU_JIT.pb", data


def test_sweep_removes_what_xla_would_fail_on(tmp_path: Path) -> None:
    good_name, good = _entry(550663463794255546, 6020828999640661302)
    files = {
        good_name: good,
        "study__1__2__XLA_CPU_JIT.pb": good,  # a key other than its name says
        "study__3__4__XLA_CPU_JIT.pb": _entry(3, 4)[1][:-3],  # cut short
        "study__5__6__XLA_CPU_JIT.pb": _entry(5, 6, b"")[1],  # no executable
        "study__7__8__XLA_CPU_JIT.pb": b"\xff" * 40,  # not a protobuf
        "study__9__9__XLA_CPU_JIT.pb": b"",
        "notes.txt": b"\xff",  # not ours: left alone
        "other__1__2__XLA_CPU_JIT.pb": b"\xff",  # another prefix's: left alone
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    removed = cc.sweep(tmp_path)
    assert sorted(p.name for p in removed) == sorted(
        n for n in files if n.startswith("study__") and n != good_name)
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        sorted([good_name, "notes.txt", "other__1__2__XLA_CPU_JIT.pb"])


PROGRAM = """
import json, os, sys, time
from study.trainers.compile_cache import use_compile_cache
use_compile_cache()
from study.trainers._tf import tensorflow
tf = tensorflow()

@tf.function(jit_compile=True)
def f(x, w):
    for _ in range(8):
        x = tf.tanh(x @ w)
    return tf.reduce_sum(x)

start = time.perf_counter()
value = float(f(tf.ones([16, 32]), tf.fill([32, 32], 0.01)))
print(json.dumps({"value": value, "seconds": time.perf_counter() - start}))
"""


def test_a_program_is_loaded_by_the_next_process_and_a_corrupt_entry_rebuilt(
        tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = {k: v for k, v in os.environ.items() if k not in (cc.CACHE_ENV, cc.FLAGS_ENV)}
    env = {**base, "PYTHONPATH": str(ROOT), cc.CACHE_ENV: str(cache), "STUDY_VERBOSE": "1",
           "TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "device_executable_persistor=1"}

    def run() -> tuple[float, str]:
        proc = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])["value"], proc.stderr

    value, _ = run()
    (entry,) = (cache / cc.cache_key()).glob("study__*.pb")
    assert cc.is_loadable(entry)
    again, log = run()
    assert again == value and "Loading cached entry" in log
    # Cut short, as by a writer killed mid-write: XLA alone would fail the compile.
    entry.write_bytes(entry.read_bytes()[:100])
    rebuilt, log = run()
    assert rebuilt == value and "Loading cached entry" not in log
    assert cc.is_loadable(entry)
