"""XLA's compiled programs, kept across processes by default, in a directory per machine kind.

XLA compiles each program once per process (about a second on a CPU). TensorFlow can
keep the compiled programs on disk (`--tf_xla_persistent_cache_directory` in
`TF_XLA_FLAGS`) and load them in a later process: XLA names each entry by the program's
signature (its argument shapes) and a hash of its HLO. It names neither the processor
nor the TensorFlow that built it: a CPU program is built for the instruction set of the
machine that compiled it, and one loaded on a processor lacking those instructions
would crash. So the directory XLA is
given is one per *machine kind*: a subdirectory named by a hash of the CPU's
architecture and feature flags, and TensorFlow's version (`cache_key`). A program built
elsewhere, or by another TensorFlow, sits in another subdirectory and is never read.

Where (the first that applies):
- `TF_XLA_FLAGS` already names a `--tf_xla_persistent_cache_directory`: left alone,
  the user's own choice;
- `STUDY_XLA_CACHE=off` (or `0`, `no`, `false`, or empty): no cache;
- `STUDY_XLA_CACHE=DIR`: `DIR/<key>`;
- otherwise `$XDG_CACHE_HOME/study/xla/<key>` (`~/.cache/study/xla/<key>`).

Clearing it is deleting the directory.

**Writes are atomic.** XLA writes an entry in place, so a process reading the shared
directory while another writes there could see an entry cut short, and XLA fails a
program's compile (rather than compile afresh) on an entry it cannot parse. So XLA is
never pointed at the shared directory: each process gets a private one
(`<key>.proc/<pid>-<token>/`), filled at start-up with hard links to the shared entries
(whole files: they only ever arrive by rename), where XLA reads them and writes the
programs it compiles. When the process exits (`atexit`), its new entries that XLA would
load (`is_loadable`) are renamed into the shared directory, which is atomic on one file
system, and the private directory is removed. A process killed before it exits loses
only its new entries; its private directory is removed by the next process to start.
An entry in the shared directory that XLA would fail on (from before this scheme, or a
disk fault) is removed at start-up (`sweep`), and that program is compiled again.

**Its size is capped.** At start-up and after publishing, the shared directory is cut
to `STUDY_XLA_CACHE_MB` megabytes (default 1024) by removing the least recently used
entries first: an entry's modification time is set each time a process links it in.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import platform
import secrets
import shutil
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

CACHE_ENV = "STUDY_XLA_CACHE"  # a directory, or off/0/no/false/"" to disable
SIZE_ENV = "STUDY_XLA_CACHE_MB"  # the shared directory's size cap in megabytes
DEFAULT_MB = 1024
PRIVATE = ".proc"  # suffix of the folder of the processes' private directories
FLAGS_ENV = "TF_XLA_FLAGS"
DIRECTORY_FLAG = "--tf_xla_persistent_cache_directory"
OFF = frozenset({"", "0", "off", "no", "false", "none"})
# What XLA's persistor names its entries (`<prefix>__<signature>__<cluster>__...pb`),
# and the prefix it is given, so that only files of ours are ever judged or removed.
PREFIX = "study"
ENTRY_SUFFIX = ".pb"


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


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "study" / "xla"


def cache_dir(environ: Mapping[str, str] | None = None, key: str | None = None) -> Path | None:
    """The directory XLA is to use, or None when the cache is off (see the module doc)."""
    env = os.environ if environ is None else environ
    given = env.get(CACHE_ENV)
    if given is not None and given.strip().lower() in OFF:
        return None
    root = Path(given).expanduser() if given is not None else default_root(env)
    return root / (cache_key() if key is None else key)


def _fields(data: bytes) -> dict[int, list[int | bytes]] | None:
    """The top-level fields of a serialized protobuf message (varints as ints,
    length-delimited ones as bytes), or None when `data` is not one whole message."""
    out: dict[int, list[int | bytes]] = {}
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
            wire, number = tag & 7, tag >> 3
            value: int | bytes
            if number == 0:
                return None
            if wire == 0:
                value = varint()
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                value, i = data[i:i + size], i + size
            elif wire == 2:
                length = varint()  # read before `i` is used: varint() moves it
                value, i = data[i:i + length], i + length
            else:
                return None  # groups (3, 4) are not in XLA's messages; 6, 7 do not exist
            if i > n:
                return None
            out.setdefault(number, []).append(value)
    except ValueError:
        return None
    return out


def is_loadable(path: Path) -> bool:
    """Whether XLA would load the cache file at `path` rather than fail the compile.

    XLA (TensorFlow's `DeviceExecutablePersistor`) fails the program's compile, rather
    than compile afresh, on an entry it cannot parse, whose key differs from the one
    its name says, or without an executable. So an entry must be a whole
    `XlaSerializedCacheEntry` (1: key, 2: the HLO, 3: the executable) whose key (1:
    signature fingerprint, 2: cluster fingerprint, 3: device type, 4: prefix) is the
    one in its file name (`prefix__signature__cluster__device.pb`), and a non-empty
    executable. What remains, an HLO other than the one its fingerprint names, would
    take a hash collision.
    """
    parts = path.name.removesuffix(ENTRY_SUFFIX).split("__")
    try:
        entry = _fields(path.read_bytes())
    except OSError:
        return False
    if entry is None or len(parts) != 4 or not all(len(entry.get(k, [])) == 1 for k in (1, 2, 3)):
        return False
    key_bytes, executable = entry[1][0], entry[3][0]
    if not isinstance(key_bytes, bytes) or not isinstance(executable, bytes) or not executable:
        return False
    key = _fields(key_bytes)
    if key is None:
        return False
    prefix, signature, cluster, device = parts
    want: dict[int, int | bytes] = {1: int(signature) if signature.isdigit() else -1,
                                    2: int(cluster) if cluster.isdigit() else -1,
                                    3: device.encode(), 4: prefix.encode()}
    return all(key.get(k, [None]) == [v] for k, v in want.items())


def sweep(directory: Path) -> list[Path]:
    """Remove the entries of ours (`study__*.pb`) in `directory` that XLA would fail on
    (`is_loadable`); the ones removed. Anything else is left alone."""
    removed: list[Path] = []
    try:
        children = list(directory.glob(f"{PREFIX}__*{ENTRY_SUFFIX}"))
    except OSError:
        return removed
    for path in children:
        if path.is_file() and not is_loadable(path):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def private_root(shared: Path) -> Path:
    return shared.with_name(shared.name + PRIVATE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_orphans(shared: Path) -> list[Path]:
    """Remove the private directories of processes that are gone (killed before they
    could publish); the ones removed."""
    removed: list[Path] = []
    root = private_root(shared)
    with contextlib.suppress(OSError):
        for d in root.iterdir():
            pid = d.name.partition("-")[0]
            if d.is_dir() and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    return removed


def link_in(shared: Path, private: Path) -> int:
    """Hard-link every shared entry of ours into `private` (a copy where the file system
    has no hard links), marking each as just used; how many."""
    n = 0
    with contextlib.suppress(OSError):
        for path in shared.glob(f"{PREFIX}__*{ENTRY_SUFFIX}"):
            target = private / path.name
            try:
                os.link(path, target)
            except FileExistsError:
                pass
            except OSError:
                try:
                    tmp = private / (path.name + ".tmp")
                    shutil.copyfile(path, tmp)
                    os.replace(tmp, target)
                except OSError:
                    continue
            with contextlib.suppress(OSError):
                os.utime(path)  # used now: least recently used is pruned first
            n += 1
    return n


def publish(private: Path, shared: Path) -> list[Path]:
    """Move the entries XLA wrote in `private` (those the shared directory lacks, and
    that XLA would load) into `shared` by rename, atomic on one file system; remove
    `private`. The entries published."""
    published: list[Path] = []
    with contextlib.suppress(OSError):
        for path in private.glob(f"{PREFIX}__*{ENTRY_SUFFIX}"):
            target = shared / path.name
            if target.exists() or not is_loadable(path):
                continue
            with contextlib.suppress(OSError):
                os.replace(path, target)
                published.append(target)
    shutil.rmtree(private, ignore_errors=True)
    return published


def cap_bytes(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        mb = float(env.get(SIZE_ENV, DEFAULT_MB))
    except ValueError:
        mb = DEFAULT_MB
    return max(0, int(mb * 1024 * 1024))


def prune(shared: Path, limit: int) -> list[Path]:
    """Remove the least recently used entries of ours until the rest fit in `limit`
    bytes; the ones removed."""
    entries: list[tuple[float, int, Path]] = []
    with contextlib.suppress(OSError):
        for path in shared.glob(f"{PREFIX}__*{ENTRY_SUFFIX}"):
            with contextlib.suppress(OSError):
                st = path.stat()
                entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    removed: list[Path] = []
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
            total -= size
    return removed


def _finish(private: Path, shared: Path) -> None:
    publish(private, shared)
    prune(shared, cap_bytes())


def use_compile_cache() -> None:
    """Point XLA's persistent cache at a private directory filled from this machine
    kind's shared one, published back at exit (module doc).

    TensorFlow reads `TF_XLA_FLAGS` when it loads, so this acts only before the first
    import of TensorFlow, and is a no-op after. A directory that cannot be made leaves
    the cache off: compiling is slower, never wrong.
    """
    flags = os.environ.get(FLAGS_ENV, "")
    if "tensorflow" in sys.modules or "persistent_cache_directory" in flags:
        return
    shared = cache_dir()
    if shared is None:
        return
    private = private_root(shared) / f"{os.getpid()}-{secrets.token_hex(4)}"
    try:
        shared.mkdir(parents=True, exist_ok=True)
        private.mkdir(parents=True)
    except OSError:
        return
    sweep(shared)
    remove_orphans(shared)
    prune(shared, cap_bytes())
    link_in(shared, private)
    atexit.register(_finish, private, shared)
    os.environ[FLAGS_ENV] = (f"{flags} {DIRECTORY_FLAG}={private} "
                             f"--tf_xla_persistent_cache_prefix={PREFIX}").strip()
