"""Several worker processes on one study, on real PostgreSQL and SQLite, under faults.

Every test drives the real `study` command in real processes; the PostgreSQL server
is a real one started on 127.0.0.1 by the `pg_server` fixture (tests/pg.py).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tests.helpers import ROOT, cli_env, run_cli, start_cli
from tests.pg import PASSWORD, PgServer, running_server

pytestmark = pytest.mark.slow

# The article grid x 2 seeds = 40 cells, trained briefly on a smaller data set.
FORTY = ["--seeds", "0,1", "--epochs", "1", "--set", "data.n_train=256", "--set", "data.n_val=64"]
# 8 cells whose trials take a second or two each, so a test can act mid-trial.
SLOW = ["--set", "search.batch_size=[16, 32]", "--set", "search.learning_rate=[0.01, 0.001]",
        "--seeds", "0,1", "--epochs", "8", "--trainer", "keras",
        "--set", "run.heartbeat_seconds=1", "--set", "run.grace_seconds=4"]
SLOW_CELLS = sorted(itertools.product((16, 32), (0.01, 0.001), (0, 1)))


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sqlalchemy.text(query))]
    finally:
        engine.dispose()


def cells(url: str, state: str = "COMPLETE") -> list[tuple[int, float, int]]:
    found = rows(url, f"""
        SELECT t.trial_id,
          MAX(CASE WHEN p.param_name = 'batch_size' THEN p.param_value END),
          MAX(CASE WHEN p.param_name = 'learning_rate' THEN p.param_value END),
          MAX(CASE WHEN p.param_name = 'seed' THEN p.param_value END)
        FROM trials t JOIN trial_params p ON p.trial_id = t.trial_id
        WHERE t.state = '{state}' GROUP BY t.trial_id""")
    return sorted((int(b), float(lr), int(s)) for _, b, lr, s in found)  # type: ignore[arg-type]


def states(url: str) -> dict[str, int]:
    try:
        found = rows(url, "SELECT state, COUNT(*) FROM trials GROUP BY state")
    except sqlalchemy.exc.SQLAlchemyError:
        return {}
    return {str(s): int(str(n)) for s, n in found}


def values(url: str) -> dict[int, float]:
    try:
        found = rows(url, """
            SELECT t.number, v.value FROM trials t JOIN trial_values v
            ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE'""")
    except sqlalchemy.exc.ProgrammingError:
        return {}  # killed before the schema was even created
    return {int(str(n)): float(str(v)) for n, v in found}


def attr_of_failed(url: str, key: str) -> list[object]:
    return [json.loads(str(v)) for (v,) in rows(url, f"""
        SELECT a.value_json FROM trial_user_attributes a JOIN trials t
        ON t.trial_id = a.trial_id WHERE t.state = 'FAIL' AND a.key = '{key}'""")]


def running_owners(url: str) -> list[str]:
    return [json.loads(str(v)) for (v,) in rows(url, """
        SELECT a.value_json FROM trial_user_attributes a JOIN trials t
        ON t.trial_id = a.trial_id WHERE t.state = 'RUNNING' AND a.key = 'worker'""")]


def wait_until(check: Callable[[], bool], timeout: float = 120, what: str = "condition",
               every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except sqlalchemy.exc.SQLAlchemyError:
            pass
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def assert_exactly_once(url: str, expected: list[tuple[int, float, int]]) -> None:
    done = cells(url)
    dupes = [c for c, n in Counter(done).items() if n > 1]
    assert not dupes, f"cells run twice: {dupes}"
    assert done == expected, f"missing: {sorted(set(expected) - set(done))}"
    assert "RUNNING" not in states(url) and "WAITING" not in states(url)


def forty_cells() -> list[tuple[int, float, int]]:
    return sorted(itertools.product((16, 32, 64, 128, 256), (0.1, 0.01, 0.001, 0.0001), (0, 1)))


# --------------------------------------------------------------------------- exactly once


@pytest.mark.parametrize("repeat", [1, 2])
def test_four_workers_on_postgres_run_each_of_40_cells_exactly_once(
        pg_url: str, tmp_path: Path, repeat: int) -> None:
    out = run_cli(["run", *FORTY, "--workers", "4", "--storage", pg_url], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert states(pg_url) == {"COMPLETE": 40}
    assert_exactly_once(pg_url, forty_cells())
    workers = {o for (o,) in rows(pg_url, "SELECT value_json FROM trial_user_attributes "
                                          "WHERE key = 'worker'")}
    assert len(workers) >= 2, "the trials were not shared between workers"
    assert PASSWORD not in out.stdout + out.stderr


def test_four_workers_on_sqlite_run_each_cell_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    out = run_cli(["run", *FORTY, "--workers", "4", "--storage", url], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert states(url) == {"COMPLETE": 40}
    assert_exactly_once(url, forty_cells())


def test_worker_joins_an_existing_study_and_refuses_a_missing_one(
        pg_url: str, tmp_path: Path) -> None:
    missing = run_cli(["worker", "--storage", pg_url, "--study-name", "nope"], cwd=tmp_path)
    assert missing.returncode == 2
    assert "--study-name: no study 'nope' made by `study run`" in missing.stderr
    assert PASSWORD not in missing.stderr
    # `study run` makes the study; a worker started meanwhile shares the work.
    run = start_cli(["run", *SLOW, "--storage", pg_url], cwd=tmp_path)
    wait_until(lambda: states(pg_url).get("RUNNING", 0) >= 1, what="a running trial")
    joined = run_cli(["worker", "--storage", pg_url, "--study-name", "article"], cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert_exactly_once(pg_url, SLOW_CELLS)
    owners = {o for (o,) in rows(pg_url, "SELECT value_json FROM trial_user_attributes "
                                         "WHERE key = 'worker'")}
    assert len(owners) == 2


# --------------------------------------------------------------------------- faults


def test_kill_9_of_one_worker_its_cell_is_rerun_by_another(pg_url: str, tmp_path: Path) -> None:
    proc = start_cli(["run", *SLOW, "--workers", "3", "--storage", pg_url], cwd=tmp_path)
    wait_until(lambda: states(pg_url).get("COMPLETE", 0) >= 1 and
               len(running_owners(pg_url)) >= 2, what="workers mid-trial")
    victim = int(running_owners(pg_url)[0].split(":")[1])
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "1 worker(s) were killed" in err
    assert_exactly_once(pg_url, SLOW_CELLS)
    assert attr_of_failed(pg_url, "status") == ["abandoned"]


def test_a_silent_remote_worker_is_found_by_its_heartbeat(pg_url: str, tmp_path: Path) -> None:
    """A worker on another host (its own UTS namespace and hostname) is killed mid-trial.

    Its process cannot be checked from here, so only its stopped heartbeat tells that
    it is gone: after run.grace_seconds (4 s) a local worker re-runs its cell.
    """
    probe = subprocess.run(["unshare", "-u", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -u is not permitted here: {probe.stderr.decode().strip()}")
    local = start_cli(["run", *SLOW, "--storage", pg_url], cwd=tmp_path)
    wait_until(lambda: states(pg_url).get("RUNNING", 0) >= 1, what="the local run")
    remote_cmd = ("hostname remote-host && exec " + " ".join(
        [sys.executable, "-m", "study", "worker", "--storage", f"'{pg_url}'",
         "--study-name", "article"]))
    remote = subprocess.Popen(["unshare", "-u", "sh", "-c", remote_cmd], cwd=ROOT,
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: any(o.startswith("remote-host:") for o in running_owners(pg_url)),
               what="the remote worker mid-trial")
    remote.send_signal(signal.SIGKILL)
    remote.communicate(timeout=30)
    _, err = local.communicate(timeout=300)
    assert local.returncode == 0, err
    assert_exactly_once(pg_url, SLOW_CELLS)
    assert attr_of_failed(pg_url, "status") == ["abandoned"]


def _killpg_at(args: list[str], url: str, cwd: Path, moment: float) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "study", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(moment)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def test_kill_9_of_the_whole_run_then_rerun_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    """The whole pool killed at three moments, each in the next run of one study: while
    it starts, as its workers start, and mid-trial. Each run keeps what the runs before it
    finished, and a last run completes every cell exactly once."""
    args = ["run", *SLOW, "--workers", "3", "--storage", pg_url]
    kept: dict[int, float] = {}
    for moment in (0.8, 5.0, 9.0):
        _killpg_at(args, pg_url, tmp_path, moment)
        now = values(pg_url)
        assert {k: v for k, v in now.items() if k in kept} == kept, moment
        kept = now
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert_exactly_once(pg_url, SLOW_CELLS)
    assert {k: v for k, v in values(pg_url).items() if k in kept} == kept
    assert set(attr_of_failed(pg_url, "status")) <= {"abandoned", "duplicate"}


def _mid_trial(url: str, complete: int) -> Callable[[], bool]:
    """More than `complete` trials finished, and at least two workers mid-trial."""
    return lambda: states(url).get("COMPLETE", 0) > complete and len(running_owners(url)) >= 2


def test_signal_stops_every_worker_cleanly(pg_url: str, tmp_path: Path) -> None:
    """Ctrl-C, then SIGTERM in the next run of the same study, each with both workers
    mid-trial; then a run completes every cell exactly once."""
    args = ["run", *SLOW, "--workers", "2", "--storage", pg_url]
    failed = 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        complete = states(pg_url).get("COMPLETE", 0)
        proc = start_cli(args, cwd=tmp_path)
        wait_until(_mid_trial(pg_url, complete), what="workers mid-trial")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (sig, err)
        assert "Traceback" not in err
        st = states(pg_url)
        # A worker between trials when the signal lands stops before claiming; one mid-trial
        # marks its trial FAIL "interrupted". Nothing is left RUNNING either way.
        assert "RUNNING" not in st and st.get("FAIL", 0) > failed, (sig, st)
        failed = st["FAIL"]
        assert set(attr_of_failed(pg_url, "status")) == {"interrupted"}
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert_exactly_once(pg_url, SLOW_CELLS)


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A server of this test's own, since the test stops it."""
    with running_server() as server:
        yield server


def test_storage_disappearing_stops_workers_then_a_rerun_completes(
        own_pg: PgServer, tmp_path: Path) -> None:
    url = own_pg.create_db("vanish")
    args = ["run", *SLOW, "--workers", "2", "--storage", url]
    proc = start_cli(args, cwd=tmp_path)
    wait_until(lambda: states(url).get("COMPLETE", 0) >= 2, what="two finished trials")
    kept = values(url)
    own_pg.stop("fast")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode not in (0, None), err
    assert "Traceback" not in err
    assert "failed:" in err and "127.0.0.1" in err
    assert PASSWORD not in err and "***" in err
    own_pg.start()
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert_exactly_once(url, SLOW_CELLS)
    assert {k: v for k, v in values(url).items() if k in kept} == kept


def test_unreachable_or_wrong_password_is_one_masked_line(own_pg: PgServer, tmp_path: Path) -> None:
    wrong = own_pg.url().replace(PASSWORD, "not-the-password")
    out = run_cli(["run", "--storage", wrong], cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "not-the-password" not in out.stderr and "password authentication failed" in out.stderr
    own_pg.stop("fast")
    down = run_cli(["run", "--storage", own_pg.url()], cwd=tmp_path)
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1
    assert "cannot open postgresql+psycopg://study:***@127.0.0.1" in down.stderr
    assert PASSWORD not in down.stderr


def test_password_is_never_stored(pg_url: str, tmp_path: Path) -> None:
    out = run_cli(["run", "--epochs", "1", "--set", "data.n_train=256", "--workers", "2",
                   "--storage", pg_url], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    report = run_cli(["report", "--storage", pg_url, "--out", str(tmp_path / "dash")],
                     cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert PASSWORD not in report.stdout + report.stderr
    written = list((tmp_path / "dash").iterdir())
    assert any(p.suffix == ".html" for p in written)
    assert not [p.name for p in written if PASSWORD.encode() in p.read_bytes()]
    # The report's note and figures stored on the study for optuna-dashboard included.
    for table in ("study_user_attributes", "study_system_attributes", "trial_user_attributes",
                  "trial_system_attributes"):
        assert not rows(pg_url, f"SELECT 1 FROM {table} WHERE value_json LIKE '%{PASSWORD}%'")


# --------------------------------------------------------------------------- many workers


CHEAP = "tests.cheap_trainer:train"  # a fixed time per trial, no TensorFlow


def grid(batch_sizes: list[int], rates: list[float], seeds: list[int]
         ) -> tuple[list[str], list[tuple[int, float, int]]]:
    """`study run` arguments for this grid, trained by `CHEAP`, and its cells."""
    args = ["--trainer", CHEAP, "--set", f"search.batch_size={batch_sizes}",
            "--set", f"search.learning_rate=[{', '.join(map(repr, rates))}]",
            "--seeds", ",".join(map(str, seeds))]
    return args, sorted(itertools.product(batch_sizes, rates, seeds))


def rates(n: int) -> list[float]:
    return [round(10 ** (-1 - 3 * i / max(1, n - 1)), 8) for i in range(n)]


def start_env(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    """`start_cli` with more in the environment (the cheap trainer's settings)."""
    return subprocess.Popen([sys.executable, "-m", "study", *args], cwd=cwd,
                            env={**cli_env(), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_with_kills(server: PgServer, db: str, cwd: Path, workers: int, kills: int,
                   cell_args: list[str], seconds: float = 0.05) -> dict[str, object]:
    """`study run --workers N` on a new database of `server`, `kills` of its workers
    killed with SIGKILL mid-trial, then run again; what a test or the bench checks."""
    url = server.create_db(db)
    args = ["run", *cell_args, "--workers", str(workers), "--storage", url]
    began = time.perf_counter()
    with server.peak_connections(db) as peak:
        proc = start_env(args, cwd, STUDY_CHEAP_SECONDS=str(seconds))
        owners: set[int] = set()

        def enough_mid_trial() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            owners.update(int(o.split(":")[1]) for o in running_owners(url))
            return states(url).get("COMPLETE", 0) >= 1 and len(owners) >= kills

        wait_until(enough_mid_trial, timeout=300, what=f"{kills} workers mid-trial")
        killed: list[int] = []
        for pid in sorted(owners):
            if len(killed) < kills and runner_alive(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        out, err = proc.communicate(timeout=600)
    wall = time.perf_counter() - began
    again = run_cli(args, cwd=cwd)
    return {"url": url, "rc": proc.returncode, "err": err, "out": out, "killed": len(killed),
            "wall": wall, "peak": peak[0], "again": again}


def runner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def default_pg() -> Iterator[PgServer]:
    """A server with PostgreSQL's default max_connections (100), as a user's is."""
    with running_server(max_connections=None) as server:
        yield server


def test_sixteen_workers_on_a_default_server_exactly_once_under_8_kills(
        default_pg: PgServer, tmp_path: Path) -> None:
    """16 workers (bench/workers.py runs 64), 8 of them killed with SIGKILL mid-trial: the
    others re-run their cells, each worker holds one connection (the pool's parent one
    more, this test's polling one), and a rerun finds nothing left to do."""
    assert default_pg.connections("postgres") >= 0
    cell_args, expected = grid([4, 8, 16, 32, 64, 128, 256, 512], rates(25), [0, 1])
    got = run_with_kills(default_pg, "sixteen", tmp_path, 16, 8, cell_args)
    assert got["rc"] == 0, got["err"]
    assert got["killed"] == 8 and "8 worker(s) were killed" in str(got["err"])
    assert "too many clients" not in str(got["err"])
    again = got["again"]
    assert isinstance(again, subprocess.CompletedProcess)
    assert again.returncode == 0 and "nothing to train" in again.stdout, again.stderr
    assert_exactly_once(str(got["url"]), expected)
    assert set(attr_of_failed(str(got["url"]), "status")) <= {"abandoned"}
    # One each for the 16 workers and the pool's parent, one for this test's polling, and
    # room for a connection seen closing as the next opens (a worker's read-only checks).
    assert int(str(got["peak"])) <= 16 + 2 + 2, got["peak"]


# --------------------------------------------------------------------------- a stalled worker


def test_a_stalled_workers_write_keeps_its_own_trials_and_skips_those_taken_over(
        pg_url: str) -> None:
    """A worker's claim of three; the middle one is recovered meanwhile by another worker
    (as when this one stalls past grace_seconds): its one write stores the other two and
    leaves the recovered one as the other worker left it."""
    from study import api, runner

    spec = api.resolve_spec("article", {"run.trainer": CHEAP}, seeds=[0])
    data = api.load_data(spec)
    ctx = runner.open_study(spec, pg_url, "stalled", create=True)
    me, other = runner.Worker.current(), runner.Worker("elsewhere:1:x", "elsewhere", 1, None)
    claims = runner.claim(ctx, me, 3)
    assert len(claims) == 3
    runner._fail(ctx, claims[1].trial.number, "abandoned")  # what `other` does on recovery
    trainer = api.trainer_factory(spec)()
    results = trainer.train([c.config for c in claims], data)
    statuses = runner.record(ctx, claims, results, trainer.name, wall=0.3)
    assert statuses == ["complete", runner.TAKEN_OVER, "complete"]
    assert all(c.told for c in claims)
    trials = ctx.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["status"] == "abandoned" and "train_loss" not in trials[1].user_attrs
    assert {t.user_attrs["worker"] for t in trials} == {me.id}
    # The cell goes back to the pending ones, for `other` to claim.
    again = runner.claim(ctx, other, 1)
    assert [c.config for c in again] == [claims[1].config] and again[0].trial.number == 3


def test_a_worker_stopped_past_grace_has_its_trial_rerun_and_goes_on(
        pg_url: str, tmp_path: Path) -> None:
    """One of two workers SIGSTOPped mid-trial for longer than run.grace_seconds, then
    SIGCONT: the other recovers and re-runs its cell; its own late result for that cell
    is dropped, and it goes on to train and keep others; the pool exits 0."""
    cell_args, expected = grid([16, 32, 64, 128], rates(4), [0, 1])
    mark = tmp_path / "mark"
    mark.mkdir()
    args = ["run", *cell_args, "--set", "run.heartbeat_seconds=0.5",
            "--set", "run.grace_seconds=2", "--workers", "2", "--storage", pg_url]
    proc = start_env(args, tmp_path, STUDY_CHEAP_SECONDS="0.3", STUDY_CHEAP_MARK=str(mark))
    wait_until(lambda: len(list(mark.iterdir())) == 2, what="both workers training")
    stalled = min(int(p.name) for p in mark.iterdir())
    os.kill(stalled, signal.SIGSTOP)
    try:
        wait_until(lambda: attr_of_failed(pg_url, "status") == ["abandoned"],
                   what="its trial recovered")
        kept = owned_complete(pg_url, stalled)
    finally:
        os.kill(stalled, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "exited with status" not in err
    assert_exactly_once(pg_url, expected)
    assert attr_of_failed(pg_url, "status") == ["abandoned"]
    assert owned_complete(pg_url, stalled) > kept, "the stalled worker did not go on"


def owned_complete(url: str, pid: int) -> int:
    """COMPLETE trials whose worker was process `pid`."""
    return sum(int(str(json.loads(str(v))).split(":")[1]) == pid for (v,) in rows(url, """
        SELECT a.value_json FROM trial_user_attributes a JOIN trials t
        ON t.trial_id = a.trial_id WHERE t.state = 'COMPLETE' AND a.key = 'worker'"""))


# --------------------------------------------------------------------------- the fallback line


def test_the_fallback_line_is_said_once_per_study_not_once_per_worker(tmp_path: Path) -> None:
    """A spec the population trainer does not take (Dropout with the noise probe), three
    workers: the pool's parent says why the keras trainer trains, once; its members do
    not. The line is the one `choose_trainer` gives."""
    from study import api
    from study.trainers import choose_trainer

    overrides = {"model.dropout": 0.1, "analysis.noise_epochs": [1]}
    spec = api.resolve_spec("article", overrides)
    line = api.fallback_line(spec)
    assert line is not None and line == choose_trainer(spec.run.trainer, spec)[1]
    url = f"sqlite:///{tmp_path / 's.db'}"
    out = run_cli(["run", "--set", "model.dropout=0.1", "--set", "analysis.noise_epochs=[1]",
                   "--set", "search.batch_size=[16]", "--set", "search.learning_rate=[0.01]",
                   "--seeds", "0,1,2", "--epochs", "1", "--set", "data.n_train=64",
                   "--set", "data.n_val=32", "--workers", "3", "--storage", url], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("does not support") == 1, out.stderr
    assert f"study: {line}" in out.stderr
