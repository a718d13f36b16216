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
    # XLA is given a private directory beside the shared one (atomic writes: see
    # compile_cache's docstring); the process has exited, so it is gone again.
    flags = _flags_after({"XDG_CACHE_HOME": str(tmp_path)})
    shared = tmp_path / "study/xla" / cc.cache_key()
    assert f"{cc.DIRECTORY_FLAG}={shared}{cc.PRIVATE}/" in flags
    assert shared.is_dir() and list(cc.private_root(shared).iterdir()) == []
    assert f"{cc.DIRECTORY_FLAG}={tmp_path / 'x' / cc.cache_key()}{cc.PRIVATE}/" in \
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
import json
from study.trainers.compile_cache import use_compile_cache
use_compile_cache()
from study.trainers._tf import tensorflow
tf = tensorflow()

@tf.function(jit_compile=True)
def first(x, w):
    for _ in range(8):
        x = tf.tanh(x @ w)
    return tf.reduce_sum(x)

@tf.function(jit_compile=True)
def second(x, w):
    return tf.reduce_sum(tf.nn.relu(x @ w))

x, w = tf.ones([16, 32]), tf.fill([32, 32], 0.01)
print(json.dumps([float(first(x, w)), float(second(x, w))]))
"""


def test_programs_are_loaded_by_the_next_process_and_a_corrupt_entry_rebuilt(
        tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = {k: v for k, v in os.environ.items() if k not in (cc.CACHE_ENV, cc.FLAGS_ENV)}
    env = {**base, "PYTHONPATH": str(ROOT), cc.CACHE_ENV: str(cache), "STUDY_VERBOSE": "1",
           "TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "device_executable_persistor=1"}

    def run() -> tuple[list[float], str]:
        proc = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr

    values, log = run()
    assert "Loading cached entry" not in log
    assert list(cc.private_root(cache / cc.cache_key()).iterdir()) == []  # published
    entries = sorted((cache / cc.cache_key()).glob("study__*.pb"), key=lambda p: p.stat().st_size)
    assert len(entries) == 2 and all(cc.is_loadable(e) for e in entries)
    # The larger program's entry cut short, as by a writer killed mid-write: XLA alone
    # would fail its compile. The other entry is loaded as it is.
    cut = entries[-1]
    cut.write_bytes(cut.read_bytes()[:100])
    again, log = run()
    assert again == values
    loaded = [line for line in log.splitlines() if "Loading cached entry" in line]
    assert len(loaded) == 1 and "__inference_second" in loaded[0]
    assert cc.is_loadable(cut)  # compiled again and written anew


def test_publish_moves_only_whole_entries_and_removes_the_private_directory(
        tmp_path: Path) -> None:
    shared, private = tmp_path / "key", tmp_path / "key.proc" / "123-ab"
    shared.mkdir()
    private.mkdir(parents=True)
    whole, data = _entry(11, 12)
    cut, cut_data = _entry(13, 14)
    there, there_data = _entry(15, 16)
    (private / whole).write_bytes(data)
    (private / cut).write_bytes(cut_data[:-5])  # a write XLA had not finished
    (private / there).write_bytes(there_data)
    (shared / there).write_bytes(there_data)
    published = cc.publish(private, shared)
    assert [p.name for p in published] == [whole]
    assert sorted(p.name for p in shared.iterdir()) == sorted([whole, there])
    assert (shared / whole).read_bytes() == data and not private.exists()


def test_link_in_marks_use_and_prune_removes_the_least_recently_used(tmp_path: Path) -> None:
    shared, private = tmp_path / "key", tmp_path / "key.proc" / "1-x"
    shared.mkdir()
    private.mkdir(parents=True)
    names = []
    for i in range(4):
        name, data = _entry(100 + i, 200 + i, b"x" * 1000)
        (shared / name).write_bytes(data)
        os.utime(shared / name, (1000 + i, 1000 + i))  # entry 0 the oldest
        names.append(name)
    size = (shared / names[0]).stat().st_size
    # Entry 0 is used by a process now (the others are elsewhere): it becomes the newest.
    (tmp_path / "other").mkdir()
    for name in names[1:]:
        os.replace(shared / name, tmp_path / "other" / name)
    assert cc.link_in(shared, private) == 1
    for name in names[1:]:
        os.replace(tmp_path / "other" / name, shared / name)
    assert [p.name for p in private.iterdir()] == [names[0]]
    assert (private / names[0]).stat().st_ino == (shared / names[0]).stat().st_ino
    removed = cc.prune(shared, 2 * size)
    assert sorted(p.name for p in removed) == sorted([names[1], names[2]])
    assert sorted(p.name for p in shared.iterdir()) == sorted([names[0], names[3]])
    assert cc.cap_bytes({cc.SIZE_ENV: "2"}) == 2 * 1024 * 1024
    assert cc.cap_bytes({}) == cc.DEFAULT_MB * 1024 * 1024


def test_a_killed_process_s_private_directory_is_removed_by_the_next(tmp_path: Path) -> None:
    shared = tmp_path / "key"
    shared.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = cc.private_root(shared) / f"{gone.stdout.strip()}-dead"
    mine = cc.private_root(shared) / f"{os.getpid()}-mine"
    for d in (dead, mine):
        d.mkdir(parents=True)
        (d / _entry(1, 2)[0]).write_bytes(_entry(1, 2)[1])
    assert cc.remove_orphans(shared) == [dead]
    assert not dead.exists() and mine.is_dir()


def test_processes_compiling_the_same_programs_cold_at_once_all_succeed(tmp_path: Path) -> None:
    """Three processes start together on an empty cache and compile the same programs:
    each writes in its own directory, and the shared one ends with whole entries only."""
    cache = tmp_path / "cache"
    base = {k: v for k, v in os.environ.items() if k not in (cc.CACHE_ENV, cc.FLAGS_ENV)}
    env = {**base, "PYTHONPATH": str(ROOT), cc.CACHE_ENV: str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", PROGRAM], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    values = {o.strip().splitlines()[-1] for o, _ in outs}
    assert len(values) == 1
    shared = cache / cc.cache_key()
    entries = sorted(shared.glob("study__*.pb"))
    assert len(entries) == 2 and all(cc.is_loadable(e) for e in entries)
    assert sorted(p.name for p in shared.iterdir()) == sorted(e.name for e in entries)
    assert list(cc.private_root(shared).iterdir()) == []
