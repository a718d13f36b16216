"""README.md's snippets run as a reader would run them, or are skipped with a reason.

The convention, in the fence's info string (GitHub renders only its first word, the
language, so the rest is invisible to a reader):

- ```` ```sh test=NAME ```` or ```` ```python test=NAME ````: run. Every such snippet runs,
  in README order, in one temporary directory holding a copy of `examples/quickstart/`
  under the same path, so that later snippets see what earlier ones wrote (the quickstart's
  `storage/`). A shell snippet runs under `bash -e` with this interpreter's directory
  first on PATH (`study` and `python` are the virtual environment's, as after
  `source .venv/bin/activate`); a Python snippet runs as a script with this interpreter.
  Each must exit 0, and each line of `KEY_LINES[NAME]` (stable lines, never timings nor
  progress lines) must appear both in what it printed and in the README's ```` ```text ````
  block that follows it: the README shows what the command prints.
- ```` ```LANG file=PATH ````: a twin. The block's text must appear verbatim in PATH
  (relative to the repository root); `TWINS` names what runs that file.
- ```` ```LANG skip: REASON ````: not run; `test_skipped_snippets_are_listed_with_reasons`
  prints each with its reason (`pytest -s`).

Every ```` ```sh ````, ```` ```bash ```` and ```` ```python ```` block, and every
```` ```text ```` block showing a command (a line starting with `$ `), must carry one of
the three: none is silently dropped. Every ```` ```toml ```` block must parse.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli_env

README = ROOT / "README.md"

# What runs each twin file (the block's text is checked to be in the file; the file runs there).
TWINS = {
    "examples/quickstart/mine.toml": "the README's snippet spec-file (study run --spec mine.toml)",
    "examples/quickstart/quickstart.py": "the README's snippet python (python quickstart.py)",
    "examples/quickstart/build.py": "the README's snippets spec-file and python (its builder)",
    "examples/digits_mlp.py": "tests/test_examples.py (study run --spec examples/digits_mlp.toml)",
    "examples/digits_mlp.toml": "tests/test_examples.py",
}

# Lines each run snippet must print (and its output block must show): stable ones only.
KEY_LINES = {
    "spec-file": [
        "batch_size  lr=0.03  lr=0.01  lr=0.003",
        "Objective: validation loss after training",
        "Best cell: batch_size=",
        "Results: study 'mine' in sqlite:///storage/study.db (6 complete).",
    ],
    "spec-file-results": [
        "batch_size  best_lr",
        "Objective: validation loss (train.objective = 'val_loss'), minimized.",
        "to dashboards/mine/",
        "Open file://",
    ],
    "python": [
        "Results(study='arrays', storage='sqlite:///storage/study.db')",
        "cross_entropy val_error",
        "over 1 seed(s)",
        "batch_size  lr=0.03  lr=0.01  lr=0.003",
        "Objective: validation error (train.objective = 'val_error'), minimized.",
        "Sequential 833 parameters; first 8 predictions:",
        "lr* at B=16",
        "{'batch_size': ",
        "batch_size  learning_rate  objective",
    ],
    "api": [
        "Results(study='article', storage='sqlite:///api.db')",
        "Each cell: the mean over seeds [95% percentile bootstrap over seeds].",
        "over 2 seed(s)",
        "17 files in dashboards/article",
        "study 'article' exists with a different spec: train.epochs: study has 10, this run asks 20",
    ],
}

RUN_LANGS = ("sh", "bash", "python")


@dataclass(frozen=True)
class Block:
    line: int  # the fence's line number in README.md, from 1
    lang: str
    info: str  # the info string after the language
    text: str

    @property
    def kind(self) -> str:
        """'test', 'file', 'skip' or '' (none)."""
        for kind in ("test", "file"):
            if self.info.startswith(f"{kind}="):
                return kind
        return "skip" if self.info.startswith("skip:") else ""

    @property
    def value(self) -> str:
        return re.split(r"[=:]", self.info, maxsplit=1)[1].strip() if self.kind else ""


def blocks(text: str) -> list[Block]:
    """Every fenced block of `text`, indented ones (inside a list item) included."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*(.*)$", lines[i])
        if m is None:
            i += 1
            continue
        indent, lang, info = m.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = [line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end]]
        out.append(Block(i + 1, lang, info.strip(), "\n".join(body) + "\n"))
        i = end + 1
    return out


def readme_blocks() -> list[Block]:
    return blocks(README.read_text())


def output_after(all_blocks: list[Block], block: Block) -> Block:
    """The ```text block that shows what `block` prints: the next block, whatever prose
    sits between."""
    following = [b for b in all_blocks if b.line > block.line]
    assert following and following[0].lang == "text", (
        f"README.md line {block.line}: snippet {block.value!r} has no ```text block after it")
    return following[0]


def needs_marker(block: Block) -> bool:
    return block.lang in RUN_LANGS or (
        block.lang == "text" and any(line.startswith("$ ") for line in block.text.splitlines()))


def test_every_snippet_is_run_twinned_or_skipped_with_a_reason() -> None:
    unmarked = [f"line {b.line}: ```{b.lang}" for b in readme_blocks()
                if needs_marker(b) and not b.kind]
    assert not unmarked, f"README.md snippets with no test=, file= or skip: marker: {unmarked}"
    for b in readme_blocks():
        if b.kind == "skip":
            assert len(b.value) > 10, f"README.md line {b.line}: say why it is skipped"
        if b.kind == "test":
            assert b.lang in RUN_LANGS and b.value in KEY_LINES, (
                f"README.md line {b.line}: test={b.value!r} needs KEY_LINES here")
    assert sorted(b.value for b in readme_blocks() if b.kind == "test") == sorted(KEY_LINES)


def test_skipped_snippets_are_listed_with_reasons() -> None:
    skipped = [b for b in readme_blocks() if b.kind == "skip"]
    print(f"\n{len(skipped)} README snippets not run:")
    for b in skipped:
        first = b.text.strip().splitlines()[0] if b.text.strip() else ""
        print(f"  line {b.line} ```{b.lang} {first[:60]!r}: {b.value}")
    assert skipped  # make study, PostgreSQL workers, ... are among them


def test_twins_are_in_their_files() -> None:
    twins = [b for b in readme_blocks() if b.kind == "file"]
    assert {b.value for b in twins} == set(TWINS)
    for b in twins:
        path = ROOT / b.value
        assert path.is_file(), f"README.md line {b.line}: {b.value} does not exist"
        assert b.text in path.read_text(), (
            f"README.md line {b.line}: the block is not the text of {b.value} (copy it again)")


def test_toml_blocks_parse() -> None:
    for b in readme_blocks():
        if b.lang == "toml":
            try:
                tomllib.loads(b.text)
            except tomllib.TOMLDecodeError as e:
                pytest.fail(f"README.md line {b.line}: {e}")


def test_the_key_lines_are_in_the_readme_output_blocks() -> None:
    all_blocks = readme_blocks()
    for b in all_blocks:
        if b.kind == "test":
            shown = output_after(all_blocks, b).text
            missing = [key for key in KEY_LINES[b.value] if key not in shown]
            assert not missing, f"README.md line {b.line} ({b.value}): output block lacks {missing}"


def test_the_quickstart_csv_is_what_make_data_writes(tmp_path: Path) -> None:
    quickstart = ROOT / "examples" / "quickstart"
    shutil.copy(quickstart / "make_data.py", tmp_path)
    subprocess.run([sys.executable, "make_data.py"], cwd=tmp_path, check=True, timeout=60)
    assert (tmp_path / "mine.csv").read_bytes() == (quickstart / "mine.csv").read_bytes()


@pytest.mark.slow
def test_runnable_snippets_run_and_print_their_key_lines(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples" / "quickstart", tmp_path / "examples" / "quickstart",
                    ignore=shutil.ignore_patterns("storage", "dashboards", "__pycache__"))
    env = cli_env()
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    all_blocks = readme_blocks()
    timings = []
    for b in (b for b in all_blocks if b.kind == "test"):
        start = time.monotonic()
        if b.lang == "python":
            script = tmp_path / f"snippet_{b.value}.py"
            script.write_text(b.text)
            command = [sys.executable, script.name]
        else:
            command = ["bash", "-e", "-c", b.text]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        timings.append(f"{b.value} {time.monotonic() - start:.1f}s")
        printed = done.stdout + done.stderr
        assert done.returncode == 0, (
            f"README.md line {b.line} ({b.value}) exited {done.returncode}:\n{printed[-3000:]}")
        missing = [key for key in KEY_LINES[b.value] if key not in printed]
        assert not missing, f"README.md line {b.line} ({b.value}) did not print {missing}:\n{printed}"
    print("\n" + ", ".join(timings))
