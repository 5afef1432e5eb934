"""Open the built site (`_site/`, from `make docs`) in headless Chromium and check that it renders offline.

`python .ci/docs_check.py [SITE]` (what `make docs-check` runs after building) serves `_site/` on 127.0.0.1, blocks every
request that leaves it, and opens two pages with Playwright on Debian's Chromium (the helpers of
tests/jupyterlab_driver.py: nothing is downloaded):

- 00_core.html: MathJax typeset the formulas (its output elements are there, with a size, and no math error or raw
  `$...$` text is left) and every plotly figure drew its svg;
- 03_widgets.html: its plotly figures drew, and no widget shows a broken placeholder (ipywidgets have a static
  fallback, there is no widget-state script waiting for a widget manager).

On both: no JavaScript error, no request that failed or left the site. Screenshots (the top of each page, the first
display formula, the first figure) go to $PPG_ARTIFACTS/docs (a temporary folder when unset). Exit status 1 on failure.
"""
from __future__ import annotations

import functools
import os
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_site"
sys.path.insert(0, str(ROOT / "tests"))
from jupyterlab_driver import chromium_path, free_port, launch_browser  # noqa: E402

TIMEOUT_MS = 60_000
MATHJAX_DONE = "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && MathJax.Hub.queue.running === 0"
PLOTS_DRAWN = ("() => { const divs = document.querySelectorAll('.plotly-graph-div');"
               " return divs.length > 0 && [...divs].every(d => d.querySelector('.main-svg')); }")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


def serve(directory: Path) -> tuple[ThreadingHTTPServer, str]:
    "Serve `directory` on a free port of 127.0.0.1 from a daemon thread: (server, base URL)."
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(QuietHandler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{port}/"


def wait(page, condition: str) -> bool:
    "Wait until the JavaScript `condition` holds: False after TIMEOUT_MS."
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        page.wait_for_function(condition, timeout=TIMEOUT_MS)
        return True
    except PlaywrightTimeout:
        return False


def check_math(page) -> list[str]:
    "MathJax 2 replaced each `$...$` by a `math/tex` script and a typeset span with a size; no error, no raw TeX left."
    if not wait(page, MATHJAX_DONE): return [f"MathJax did not finish typesetting within {TIMEOUT_MS // 1000} s"]
    return page.evaluate("""() => {
        const problems = [], scripts = document.querySelectorAll('script[type^="math/tex"]');
        if (!scripts.length) problems.push('no formula was typeset (no math/tex script from MathJax)');
        for (const s of scripts) {
            const out = document.getElementById(s.id + '-Frame');
            const box = out && out.getBoundingClientRect();
            if (!box || box.width === 0 || box.height === 0) { problems.push('formula without output: ' + s.textContent); break; }
        }
        if (document.querySelector('.MathJax_Error, merror')) problems.push('MathJax reported a TeX error');
        const walk = document.createTreeWalker(document.querySelector('.jupyter-wrapper'), NodeFilter.SHOW_TEXT);
        let node, text = '';  // the prose MathJax should have typeset (code and scripts keep their dollars)
        while ((node = walk.nextNode())) if (!node.parentElement.closest('code, pre, script, style, .highlight-ipynb')) text += node.textContent;
        const raw = text.match(/\\$[^$\\n]*\\\\[a-zA-Z]+[^$\\n]*\\$/);
        if (raw) problems.push('raw TeX left on the page: ' + raw[0]);
        return problems;
    }""")


def check_plots(page) -> list[str]:
    "Every plotly figure div was drawn by plotly.js (a `.js-plotly-plot` with its svg, not empty)."
    if not wait(page, PLOTS_DRAWN): return [f"no plotly figure drawn within {TIMEOUT_MS // 1000} s"]
    return page.evaluate("""() => {
        const problems = [];
        for (const d of document.querySelectorAll('.plotly-graph-div')) {
            const svg = d.querySelector('.main-svg'), box = svg && svg.getBoundingClientRect();
            if (!d.classList.contains('js-plotly-plot') || !box || box.width < 100 || box.height < 100)
                problems.push('plotly figure not drawn: ' + d.id);
        }
        return problems;
    }""")


def check_widgets(page) -> list[str]:
    "No widget placeholder: no widget-view/state script, no 'Loading widget' or 'Error displaying widget' text."
    return page.evaluate("""() => {
        const problems = [];
        if (document.querySelector('script[type^="application/vnd.jupyter.widget"]')) problems.push('widget script left on the page');
        const text = document.body.innerText;
        for (const s of ['Loading widget', 'Error displaying widget', 'model_id'])
            if (text.includes(s)) problems.push('broken widget: "' + s + '" on the page');
        return problems;
    }""")


def shoot(page, out: Path, stem: str, selector: str | None = None):
    "A screenshot of the viewport, or of the first element matching `selector` (none when there is no such element)."
    path = out / f"{stem}.png"
    if selector is None:
        page.screenshot(path=str(path))
    elif page.locator(selector).count():
        page.locator(selector).first.screenshot(path=str(path))
    else:
        return print(f"  no {selector} to photograph")
    print(f"  screenshot {path}")


def check_page(browser, url: str, checks, shots, out: Path) -> list[str]:
    "Open `url`, run `checks`, take the screenshots `shots`: the problems found."
    page, problems = browser.new_page(), []
    page.on("pageerror", lambda e: problems.append(f"JavaScript error: {e}"))
    page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
    for check in checks:
        problems += check(page)
    name = url.rsplit("/", 1)[-1].removesuffix(".html")
    for stem, selector in shots:
        shoot(page, out, f"{name}-{stem}", selector)
    page.close()
    return problems


def main(site: Path = SITE) -> int:
    from playwright.sync_api import sync_playwright

    out = Path(os.environ.get("PPG_ARTIFACTS") or tempfile.mkdtemp(prefix="ppg_artifacts_")) / "docs"
    out.mkdir(parents=True, exist_ok=True)
    exe = chromium_path()
    if not (site / "00_core.html").is_file(): return print(f"no {site / '00_core.html'}: run `make docs` first") or 1
    if exe is None: return print("no Chromium found (apt-get install chromium, or set PPG_CHROMIUM)") or 1
    server, base = serve(site)
    failures = []
    figure = ".jp-OutputArea-output:has(.js-plotly-plot)"
    pages = [("00_core", (check_math, check_plots, check_widgets), [("top", None), ("formula", ".MathJax_Display"),
                                                                   ("figure", figure)]),
             ("03_widgets", (check_plots, check_widgets), [("top", None), ("figure", figure)])]
    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            browser = launch_browser(p, exe, Path(profile), viewport=(1600, 1000))
            outside, broken = [], []
            browser.route("**/*", lambda route: route.continue_() if route.request.url.startswith((base, "data:", "blob:"))
                          else (outside.append(route.request.url), route.abort()))
            browser.on("response", lambda r: r.status >= 400 and broken.append(f"{r.status} {r.url}"))
            for name, checks, shots in pages:
                print(f"{name}.html")
                problems = check_page(browser, base + f"{name}.html", checks, shots, out)
                failures += [f"{name}: {problem}" for problem in problems]
                print("  ok" if not problems else "\n".join(f"  FAIL {problem}" for problem in problems))
            failures += [f"request outside the site (blocked): {u}" for u in outside]
            # the hidden MathML copy that MathJax's AssistiveMML adds for screen readers names MathJax's TeX fonts, which
            # the jupyter-server-mathjax wheel does not ship (the visible formulas use its STIX-Web fonts): not a failure
            failures += [f"request failed: {u}" for u in broken if "/assets/mathjax/fonts/HTML-CSS/TeX/" not in u]
            browser.close()
    finally:
        server.shutdown()
    print(f"screenshots in {out}")
    if failures:
        print("docs check FAILED:\n" + "\n".join(f"- {f}" for f in failures), file=sys.stderr)
        return 1
    print("docs check passed: formulas and plotly figures rendered offline")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else SITE))
