"""XLA's compiled programs, kept across processes by default, in a directory per machine kind.

XLA compiles each program once per process (about a second on a CPU). TensorFlow can
keep the compiled programs on disk (`--tf_xla_persistent_cache_directory` in
`TF_XLA_FLAGS`) and load them in a later process: XLA names each entry by the program
(its HLO, so its shapes) and the compiler's version. It does not name the processor:
a CPU program is built for the instruction set of the machine that compiled it, and one
loaded on a processor lacking those instructions would crash. So the directory XLA is
given is one per *machine kind*: a subdirectory named by a hash of the CPU's
architecture and feature flags, and TensorFlow's version (`cache_key`). A program built
elsewhere, or by another TensorFlow, sits in another subdirectory and is never read.

Where (the first that applies):
- `TF_XLA_FLAGS` already names a `--tf_xla_persistent_cache_directory`: left alone,
  the user's own choice;
- `STUDY_XLA_CACHE=off` (or `0`, `no`, `false`, or empty): no cache;
- `STUDY_XLA_CACHE=DIR`: `DIR/<key>`;
- otherwise `$XDG_CACHE_HOME/study/xla/<key>` (`~/.cache/study/xla/<key>`).

Clearing it is deleting the directory. An entry XLA cannot read (a truncated or
corrupt file, one written by another version) is not fatal: before TensorFlow loads,
`use_compile_cache` removes the files of the key's directory that are not whole
serialized entries (XLA writes each to a temporary name and renames it, so a killed
writer leaves only a temporary file), and XLA itself compiles afresh when an entry
does not match its program.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

CACHE_ENV = "STUDY_XLA_CACHE"  # a directory, or off/0/no/false/"" to disable
FLAGS_ENV = "TF_XLA_FLAGS"
DIRECTORY_FLAG = "--tf_xla_persistent_cache_directory"
OFF = frozenset({"", "0", "off", "no", "false", "none"})
# What XLA's persistor names its entries (`<prefix>__<signature>__<cluster>__...pb`),
# and the prefix it is given, so that only files of ours are ever judged or removed.
PREFIX = "study"
ENTRY_SUFFIX = ".pb"
STALE_TEMP_SECONDS = 3600.0  # a temporary file older than this belongs to a dead writer


def cpu_features(cpuinfo: str | None = None) -> str:
    """What the compiled code depends on: the architecture and the CPU's feature flags.

    On Linux the flags of /proc/cpuinfo (`flags` on x86, `Features` on ARM), sorted;
    elsewhere the processor's name, which is all Python offers.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in ("flags", "features"):
            flags.update(value.split())
            break  # every core lists the same flags; the first is enough
    described = " ".join(sorted(flags)) if flags else platform.processor()
    return f"{platform.machine()}|{described}"


def tensorflow_version() -> str:
    try:
        return metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        return "none"


def cache_key(features: str | None = None, tf_version: str | None = None) -> str:
    """The subdirectory for this machine kind and TensorFlow: 16 hex digits of a hash."""
    features = cpu_features() if features is None else features
    tf_version = tensorflow_version() if tf_version is None else tf_version
    text = f"cpu={features}\ntensorflow={tf_version}\npython={sys.implementation.cache_tag}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "study" / "xla"


def cache_dir(environ: dict[str, str] | None = None, key: str | None = None) -> Path | None:
    """The directory XLA is to use, or None when the cache is off (see the module doc)."""
    env = os.environ if environ is None else environ
    given = env.get(CACHE_ENV)
    if given is not None and given.strip().lower() in OFF:
        return None
    root = Path(given).expanduser() if given is not None else default_root()
    return root / (cache_key() if key is None else key)


def _is_whole_entry(path: Path) -> bool:
    """Whether a cache file parses as a serialized entry: protobuf fields with wire types
    0-5 and lengths inside the file. A truncated or overwritten file fails this; a file
    that passes but does not hold the program XLA expects is rejected by XLA itself."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data:
        return False
    i, n = 0, len(data)

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            if i >= n or shift > 63:
                raise ValueError("truncated varint")
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    try:
        while i < n:
            tag = varint()
            wire, field = tag & 7, tag >> 3
            if field == 0:
                return False
            if wire == 0:
                varint()
            elif wire == 1:
                i += 8
            elif wire == 2:
                i += varint()
            elif wire == 5:
                i += 4
            else:
                return False
            if i > n:
                return False
    except ValueError:
        return False
    return True


def sweep(directory: Path, now: float | None = None) -> list[Path]:
    """Remove the files of `directory` XLA could not load; the ones removed.

    Judged: entries of ours (`study__*.pb`) that are not whole, and temporary files a
    writer left more than `STALE_TEMP_SECONDS` ago. Anything else is left alone.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        children = list(directory.iterdir())
    except OSError:
        return removed
    for path in children:
        if not path.name.startswith(PREFIX + "__") or not path.is_file():
            continue
        if path.name.endswith(ENTRY_SUFFIX):
            bad = not _is_whole_entry(path)
        else:
            try:
                bad = now - path.stat().st_mtime > STALE_TEMP_SECONDS
            except OSError:
                continue
        if bad:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def use_compile_cache() -> None:
    """Point XLA's persistent cache at this machine kind's directory (module doc).

    TensorFlow reads `TF_XLA_FLAGS` when it loads, so this acts only before the first
    import of TensorFlow, and is a no-op after. A directory that cannot be made leaves
    the cache off: compiling is slower, never wrong.
    """
    flags = os.environ.get(FLAGS_ENV, "")
    if "tensorflow" in sys.modules or "persistent_cache_directory" in flags:
        return
    directory = cache_dir()
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    sweep(directory)
    os.environ[FLAGS_ENV] = (f"{flags} {DIRECTORY_FLAG}={directory} "
                             f"--tf_xla_persistent_cache_prefix={PREFIX}").strip()
