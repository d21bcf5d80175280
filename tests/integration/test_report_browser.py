"""The HTML report in a real headless Chromium: renders, no console errors, no fetches, no XSS."""

import os
import shutil

import pytest

from pipeline import cli
from tests import ROOT

pytestmark = pytest.mark.integration
ARTIFACTS = os.path.join(ROOT, "out", "test-artifacts")
XSS_LINES = [b"<script>window.__xss = 1</script>",
             b'{"view_id": "x", "video_id": "v", "ts": 1793556000000, "playhead_ms": 0, '
             b'"event": "<img src=x onerror=\\"window.__xss=2\\">"}']


@pytest.fixture(scope="module")
def report_path(tmp_path_factory):
    src = tmp_path_factory.mktemp("workload")
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["generate", f"--out={src}", "--scenario=clean", "--viewers=400", "--seed=5"]) == 0
    with open(src / "beacons-00000-of-00004.ndjson", "ab") as f:
        f.write(b"\n".join(XSS_LINES) + b"\n")
    assert cli.main(["run", f"--source={src}", f"--output={out}"]) == 0
    assert cli.main(["report", f"--output={out}"]) == 0
    return out / "report.html"


@pytest.fixture(scope="module")
def page(report_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is required: `make test` installs it (make browser)"
    from playwright.sync_api import sync_playwright
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("request", lambda r: requests.append(r.url))
        pg.goto(f"file://{report_path}")
        pg.wait_for_load_state("load")
        yield pg, errors, requests
        browser.close()


def test_report__opens_without_console_errors_or_network(page, report_path):
    pg, errors, requests = page
    assert errors == []
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    assert os.path.getsize(report_path) < 5_000_000


def test_report__every_chart_rendered(page):
    pg, _, _ = page
    charts = pg.evaluate("""() => [...document.querySelectorAll('figure svg')].map(s => {
        const r = s.getBoundingClientRect();
        return {w: r.width, h: r.height, shapes: s.querySelectorAll('path,rect,use,line').length};
    })""")
    assert len(charts) >= 4 + 3 * 2 + 1      # time series, two per content alert, delivery
    assert all(c["w"] > 300 and c["h"] > 80 and c["shapes"] > 10 for c in charts), charts


def test_report__dead_letter_payloads_are_shown_escaped_never_run(page):
    pg, _, _ = page
    assert pg.evaluate("() => window.__xss") is None
    text = pg.inner_text("#dead ~ table")
    assert "<script>window.__xss = 1</script>" in text
    assert "onerror" in text


def test_report__alert_links_lead_to_sections_and_a_screenshot_is_kept(page):
    pg, _, _ = page
    links = pg.eval_on_selector_all("a[href^='#alert-']", "els => els.map(e => e.getAttribute('href'))")
    assert links and all(pg.locator(href).count() == 1 for href in links)
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.abspath(os.path.join(ARTIFACTS, "report.png"))
    pg.screenshot(path=shot, full_page=True)
    print(f"report screenshot: {shot}")
    assert os.path.getsize(shot) > 10_000
