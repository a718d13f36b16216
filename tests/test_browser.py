"""In a real headless Chromium (Debian's, driven by Playwright): the pages `study report`
writes, opened from file:// with the network cut off, and optuna-dashboard showing our study.

Every wait has a timeout; screenshots go under the test's temporary directory.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from study.report import write_report
from tests.helpers import sql, start_cli
from tests.studies import make_study

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 30_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_MS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("browser") / "study.db"
    make_study(f"sqlite:///{db}")
    return db


class Watch:
    """A page whose requests outside `allowed` are aborted (and recorded), and whose
    console errors and uncaught exceptions are recorded."""

    def __init__(self, browser: Any, allowed: str) -> None:
        self.allowed = allowed
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(WAIT_MS)
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route: Any) -> None:
        if route.request.url.startswith(self.allowed):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def plots(self, selector: str = ".js-plotly-plot") -> list[int]:
        """How many traces each plotly graph on the page holds."""
        return list(self.page.evaluate(
            "(sel) => [...document.querySelectorAll(sel)].map(d => (d.data || []).length)",
            selector))

    def close(self) -> None:
        self.context.close()


def test_every_report_page_draws_offline(browser: Any, study_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "dashboards"
    write_report(f"sqlite:///{study_db}", None, out, dashboard=False)
    pages = sorted(out.glob("*.html"))
    assert len(pages) == 18  # the index and 17 figures, critical.html among them
    watch = Watch(browser, "file://")
    try:
        for page in pages:
            watch.page.goto(page.as_uri(), wait_until="load")
            watch.page.wait_for_selector(".js-plotly-plot .main-svg", state="attached")
            counts = watch.plots()
            assert counts and all(n > 0 for n in counts), (page.name, counts)
            # Drawn, not just a div: every graph has its SVG with marks in it.
            drawn = watch.page.evaluate(
                "() => [...document.querySelectorAll('.js-plotly-plot')].every(d => "
                "d.querySelector('.main-svg') && d.querySelectorAll('.trace, .hm, image, path')"
                ".length > 0)")
            assert drawn, page.name
            watch.page.screenshot(path=str(tmp_path / f"{page.stem}.png"))
            assert watch.blocked == [], (page.name, watch.blocked)
            assert watch.errors == [], (page.name, watch.errors)
        index = (out / "index.html").as_uri()
        watch.page.goto(index)
        embedded = watch.plots()
        # The scaling chart, the article's chart and the heat map.
        assert len(embedded) == 3 and all(embedded)
        assert watch.page.locator("p.conclusion").inner_text().startswith("Best LR ")
        watch.page.click("text=Heat map of the objective")
        watch.page.wait_for_url(re.compile(r".*/heatmap_objective\.html$"))
        assert watch.page.locator("text=diverged").count() >= 3
    finally:
        watch.close()
    assert all((tmp_path / f"{p.stem}.png").stat().st_size > 0 for p in pages)


def _dashboard_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(60)
    match = re.search(r"http://\S+/dashboard/", lines[0]) if lines else None
    assert match, (lines, proc.poll())
    return match.group(0)


def test_optuna_dashboard_shows_the_study_its_trials_and_our_figure(
        browser: Any, study_db: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{study_db}"
    write_report(url, None, tmp_path / "dashboards")  # stores our figures and the note
    (n_trials,) = sql(study_db, "SELECT COUNT(*) FROM trials")[0]
    proc = start_cli(["dashboard", "--storage", url, "--port", "0"])
    watch = None
    try:
        base = _dashboard_url(proc)
        origin = base.removesuffix("/dashboard/")
        watch = Watch(browser, origin)
        page = watch.page
        page.goto(base)
        study = page.locator("a[href*='/dashboard/studies/']", has_text="article")
        study.wait_for()
        page.screenshot(path=str(tmp_path / "dashboard-studies.png"))
        study.click()
        page.wait_for_url(re.compile(r".*/dashboard/studies/\d+$"))
        ours = '[id="user-defined-plot:article-chart"]'
        page.wait_for_selector(f"{ours} .main-svg", state="attached")
        page.wait_for_selector('[id="user-defined-plot:heatmap-objective"] .main-svg',
                               state="attached")
        counts = watch.plots(ours)
        assert len(counts) == 1 and counts[0] > 0
        title = page.evaluate(f"() => document.querySelector('{ours}').layout.title.text")
        assert title.startswith("Final loss against batch size")
        page.screenshot(path=str(tmp_path / "dashboard-study.png"), full_page=True)
        page.goto(page.url + "/trials")
        page.get_by_text(f"{n_trials} Trials", exact=True).wait_for()
        page.screenshot(path=str(tmp_path / "dashboard-trials.png"))
        page.goto(page.url.removesuffix("/trials") + "/note")
        page.get_by_text("article: summary by study report").wait_for()
        assert watch.blocked == [], watch.blocked
        assert watch.errors == [], watch.errors
    finally:
        if watch is not None:
            watch.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err
    for shot in ("dashboard-studies", "dashboard-study", "dashboard-trials"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 0
