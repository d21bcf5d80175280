"""Real viewers: one headless Debian Chromium, one browser context (own storage) per page.

    results = watch([url1, url2, ...], seconds=40)

opens every page at about the same time, lets them play for ``seconds``, reads what each
browser saw (``window.__sw`` from clients/web/examples/page.js, the video element's
``currentTime``, console errors and uncaught page errors), then closes the pages (so
``pagehide`` fires and players/monitors flush their last reports) and the browser.
Playwright's own browser downloads are not used: Debian's /usr/bin/chromium is.
"""

from __future__ import annotations

import time

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
# --headless and --no-sandbox come from launch(headless=True, chromium_sandbox=False).
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--mute-audio",
]
READ_STATE = """() => {
  const video = document.querySelector('video');
  return {sw: window.__sw ?? null, currentTime: video ? video.currentTime : null,
          readyState: video ? video.readyState : null, paused: video ? video.paused : null};
}"""


def watch(urls: list[str], seconds: float, chromium: str = CHROMIUM,
          flush_grace_s: float = 1.0, stagger_s: float = 0.0) -> list[dict]:
    """Play every URL in its own context until ``seconds`` after the first opened, each
    ``stagger_s`` after the one before (viewers joining a live event); one result dict per
    URL, in order:

    ``{"url", "sw" (window.__sw), "current_time", "ready_state", "paused",
       "console_errors" [str], "page_errors" [str], "opened_at", "closed_at"}`` (epoch s).
    """
    results = [{"url": url, "console_errors": [], "page_errors": []} for url in urls]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     chromium_sandbox=False, args=CHROMIUM_ARGS)
        try:
            pages = []
            for result in results:
                page = browser.new_context(viewport={"width": 640, "height": 360}).new_page()
                page.on("console", lambda msg, r=result: msg.type == "error"
                        and r["console_errors"].append(msg.text))
                page.on("pageerror", lambda exc, r=result: r["page_errors"].append(str(exc)))
                pages.append(page)
            # "commit" returns as soon as navigation starts: the pages start together.
            for i, (page, result) in enumerate(zip(pages, results)):
                if i and stagger_s:
                    pages[0].wait_for_timeout(stagger_s * 1000)
                result["opened_at"] = time.time()
                page.goto(result["url"], wait_until="commit")
            # Waiting through Playwright (not time.sleep) keeps console events flowing.
            deadline = results[0]["opened_at"] + seconds
            while (left := deadline - time.time()) > 0:
                pages[0].wait_for_timeout(min(left, 1.0) * 1000)
            for page, result in zip(pages, results):
                try:
                    state = page.evaluate(READ_STATE)
                except Exception as exc:  # a crashed page: report it, keep the others
                    state = {}
                    result["page_errors"].append(f"evaluate failed: {exc}")
                result.update(sw=state.get("sw"), current_time=state.get("currentTime"),
                              ready_state=state.get("readyState"), paused=state.get("paused"))
            for page, result in zip(pages, results):
                # run_before_unload closes the page like a user would: pagehide fires.
                page.close(run_before_unload=True)
                result["closed_at"] = time.time()
            time.sleep(flush_grace_s)  # let sendBeacon/keepalive requests leave
        finally:
            browser.close()
    return results
