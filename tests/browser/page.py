"""The fleet's page in a real headless Chromium (Debian's, driven by Playwright).

Usage: page.py MODE URL KEY OUT_DIR CHROMIUM
  MODE full: the key box, the mock fleet's models, load without a reload, the playground's
             stream, charts drawn after traffic, the log pane following, pin, a restore of a
             saved state, an unload confirmed in a dialog; the page's weight and first
             paint measured.
  MODE read: a door with security.max_tier = "read": no control shown, and the API
             refuses an action with the page's own key.
  MODE measure: the page's weight and its first paint over 20 loads, nothing else (the
             benchmark's section `page`).
Prints `ok <what>` per check and `figure <name> <value>` per measure; exits non-zero on the
first failure. Screenshots go to OUT_DIR. Every request stays on loopback.
"""

import gzip
import json
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import sync_playwright

MODE, URL, KEY, OUT, CHROMIUM = sys.argv[1:6]
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions"]


ERRORS = []


def ok(what):
    print("ok " + what, flush=True)


def figure(name, value):
    print(f"figure {name} {value}", flush=True)


def chat(model, content="count to five"):
    """A request through the door, as any client would send it (traffic for the charts)."""
    req = urllib.request.Request(
        URL + "/v1/chat/completions",
        data=json.dumps({"model": model, "max_tokens": 16,
                         "messages": [{"role": "user", "content": content}]}).encode(),
        headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200, r.status


def until(page, script, timeout=20_000, arg=None):
    """Polls `script` (a function evaluated in the page) until it is truthy. Not
    wait_for_function: the page's CSP forbids the eval it would use."""
    deadline = time.time() + timeout / 1000
    while True:
        v = page.evaluate(script, arg)
        if v:
            return v
        assert time.time() < deadline, f"timed out waiting for {script}"
        page.wait_for_timeout(200)


def row(page, model):
    return page.locator(f'#models tr[data-model="{model}"]')


def wait_status(page, model, status, timeout=60_000):
    page.wait_for_selector(f'#models tr[data-model="{model}"][data-status="{status}"]', timeout=timeout)


def points(page, chart):
    return int(page.get_attribute(f'div[data-chart="{chart}"]', "data-points") or 0)


def enter_key(page):
    page.wait_for_selector("#keybox:not([hidden])", timeout=10_000)
    ok("without the key the page asks for it and shows no data")
    page.fill("#key", KEY)
    page.click("#keybox button[type=submit]")


def weight(responses):
    """Bytes of the page and its assets as served, and gzipped."""
    raw = gz = 0
    for body in responses.values():
        raw += len(body)
        gz += len(gzip.compress(body, compresslevel=9))
    return raw, gz


def first_paint(context, loads=5):
    """First contentful paint of fresh loads (the key already in the tab), in ms."""
    times = []
    for _ in range(loads):
        p = context.new_page()
        p.goto(URL + "/", wait_until="load")
        fcp = until(p, "() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime")
        times.append(fcp)
        p.close()
    return sorted(times)[len(times) // 2], max(times)


def full(page, context, responses):
    enter_key(page)
    page.wait_for_selector('#models tr[data-model="tiny"]')
    page.wait_for_selector('#models tr[data-model="other"]')
    ok("the page lists the fleet's models")

    row(page, "other").locator('button[data-action="load"]').click()
    wait_status(page, "other", "loaded")
    ok("load starts a model and its status turns to loaded without a reload")

    page.select_option("#log-model", "other")
    until(page, "() => document.querySelector('#log').textContent.includes('HTTP/1.1')")
    before = page.evaluate("document.querySelector('#log').textContent.length")

    page.select_option("#play-model", "other")
    page.fill("#prompt", "Say hello in a few words")
    page.click("#send")
    page.wait_for_selector("#play-stats[data-done]", timeout=60_000)
    answer = page.text_content("#answer")
    stats = page.text_content("#play-stats")
    assert answer.strip(), "the playground shows no answer"
    assert "tokens/s" in stats and not stats.startswith("failed"), stats
    ok(f"the playground streams an answer ({stats.strip()})")

    for i in range(6):
        chat("other", f"request {i}")
        time.sleep(0.5)
    until(page, """(before) => {
        const t = document.querySelector('#log').textContent;
        return t.length > before && t.includes('POST /v1/chat/completions');
    }""", arg=before)
    ok("the log pane streams new lines as they are written")

    deadline = time.time() + 40
    while time.time() < deadline:
        if all(points(page, c) > 0 for c in ("tokens", "requests", "latency", "gpu-memory")):
            break
        page.wait_for_timeout(1000)
    got = {c: points(page, c) for c in ("tokens", "requests", "latency", "ttft", "kv", "gpu-memory", "gpu-util", "gpu-temp")}
    assert all(got[c] > 0 for c in ("tokens", "requests", "latency", "gpu-memory")), got
    assert page.locator('div[data-chart="tokens"] canvas').count() == 1, "uPlot drew no canvas"
    ok(f"after traffic the charts draw points {got}")
    page.screenshot(path=f"{OUT}/page.png", full_page=True)

    page.wait_for_selector('#alerts .alert[data-state="firing"]', timeout=20_000)
    firing = page.text_content('#alerts .alert[data-state="firing"]')
    assert "gpu_temperature" in firing, firing
    ok("a firing alert is shown as the alert resources have it")

    page.click('.ranges button[data-range="1h"]')
    until(page, "() => document.querySelector('#charts-note').textContent.includes('of 30 s')")
    ok("the range buttons redraw the charts over 1 h")

    row(page, "other").locator('button[data-action="pin"]').click()
    until(page, """() => document.querySelector('#models tr[data-model="other"]').textContent.includes('yes')""")
    ok("pin marks the model pinned")

    page.wait_for_selector('#states tr[data-state] button[data-action="restore"]', timeout=15_000)
    page.locator('#states tr[data-state] button[data-action="restore"]').first.click()
    page.click("#confirm-ok")
    wait_status(page, "tiny", "loaded")
    ok("restore puts a saved state's model back")

    row(page, "other").locator('button[data-action="unload"]').click()
    page.wait_for_selector("#confirm[open]")
    ok("unload asks for confirmation first")
    page.click("#confirm-ok")
    wait_status(page, "other", "unloaded", 30_000)
    ok("a confirmed unload stops the model")

    raw, gz = weight(responses)
    figure("page_bytes", raw)
    figure("page_gzip_bytes", gz)
    assert gz < 150 * 1024, f"the page weighs {gz} bytes gzipped"
    ok(f"the page and its assets weigh {gz / 1024:.1f} KiB gzipped ({raw / 1024:.1f} KiB as served)")

    median, worst = first_paint(context)
    figure("first_contentful_paint_ms_median", round(median, 1))
    figure("first_contentful_paint_ms_max", round(worst, 1))
    ok("first paint measured")


def measure(page, context, responses):
    """The benchmark's figures only (scripts/bench.sh, section `page`)."""
    enter_key(page)
    page.wait_for_selector('#models tr[data-model="tiny"]')
    page.wait_for_timeout(1000)
    raw, gz = weight(responses)
    figure("page_bytes", raw)
    figure("page_gzip_bytes", gz)
    median, worst = first_paint(context, 20)
    figure("first_contentful_paint_ms_median", round(median, 1))
    figure("first_contentful_paint_ms_max", round(worst, 1))


def read_only(page):
    enter_key(page)
    page.wait_for_selector('#models tr[data-model="tiny"]')
    page.wait_for_timeout(500)
    assert page.locator("button[data-action]").count() == 0, "a control is shown"
    assert page.locator("td.controls").count() == 0
    assert page.text_content("#tier").strip() == "read only"
    ok("with max_tier = read the page shows no control")
    page.screenshot(path=f"{OUT}/page-read-only.png", full_page=True)
    status, body = page.evaluate("""async (key) => {
        const r = await fetch('/ui/api/models/tiny/load', {method: 'POST',
            headers: {'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json'}, body: '{}'});
        return [r.status, await r.json()];
    }""", KEY)
    assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED", (status, body)
    assert "max_tier" in body["error"]["message"], body
    # The refusal is the browser's console error too: expected here, and only here.
    ERRORS[:] = [e for e in ERRORS if "status of 403" not in e]
    ok("with max_tier = read the API refuses an action")


def main():
    errors = ERRORS
    responses = {}
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1400, "height": 1000})
        page = context.pages[0] if context.pages else context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and "401" not in m.text and errors.append(m.text))

        def keep(resp):
            path = resp.url[len(URL):]
            if path == "/" or path.startswith("/ui/assets/"):
                try:
                    responses[path] = resp.body()
                except Exception:
                    pass
        page.on("response", keep)
        page.goto(URL + "/")
        if MODE == "full":
            full(page, context, responses)
        elif MODE == "measure":
            measure(page, context, responses)
        else:
            read_only(page)
        context.close()
    assert not errors, f"the page logged errors: {errors}"
    ok("no script error")


if __name__ == "__main__":
    main()
