"""The notebooks in JupyterLab, in a real (headless Chromium) browser.

* the widgets notebook renders its controls and plotly figure, and moving the K slider re-renders the figure with
  different data (screenshots before/after go to $PPG_ARTIFACTS, a temp dir when unset);
* the notebooks of settings.ini `browser_notebooks` (those with widgets) run top to bottom in JupyterLab without an error
  output, within their time budget (cells nbdev_test skips are skipped here too: `#| eval: false`, the settings.ini
  tst_flags, `nbdev_export(`). `make test`'s nbdev_test skips these notebooks and runs every other one, so each notebook
  runs once per CI run.

One JupyterLab server and one browser per session. Without Chromium/Playwright the tests skip, except under CI=true,
where they fail. Needs: Debian's `chromium`, the `playwright` Python package (no `playwright install`), anywidget.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from jupyterlab_driver import (NBS, JupyterLabServer, NotebookRunError, browser_notebooks, cells_to_skip, chromium_path,
                               close_notebook, find_slider, in_ci, launch_browser, open_lab, open_notebook, plotly_state, run_cells,
                               tst_flags, wait_plotly_changed, widget_errors)

WIDGETS_NB = "03_widgets.ipynb"
DEFAULT_BUDGET = 180.0  # seconds per notebook (run of its cells in the browser, kernel start excluded)
BUDGETS: dict[str, float] = {}  # per-notebook overrides, e.g. {"05_train.ipynb": 240}
# the browser notebooks; the widgets notebook is run (all cells, same checks and budget) by its own test below
NOTEBOOKS = [name for name in browser_notebooks() if name != WIDGETS_NB]
assert WIDGETS_NB in browser_notebooks(), f"settings.ini browser_notebooks must list {WIDGETS_NB}"
assert all((NBS / name).exists() for name in browser_notebooks()), f"settings.ini browser_notebooks: {browser_notebooks()}"


def unavailable(reason: str):
    "Skip with `reason`; under CI=true fail instead (CI must run the browser test)."
    if in_ci():
        pytest.fail(f"{reason} (CI is set: the browser test must not be skipped)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def artifacts() -> Path:
    d = os.environ.get("PPG_ARTIFACTS")
    p = Path(d) if d else Path(tempfile.mkdtemp(prefix="ppg_artifacts_"))
    p.mkdir(parents=True, exist_ok=True)
    print(f"browser screenshots: {p}")
    return p


@pytest.fixture(scope="session")
def sync_playwright_api():
    exe = chromium_path()
    if exe is None:
        where = f"PPG_CHROMIUM={os.environ['PPG_CHROMIUM']}" if os.environ.get("PPG_CHROMIUM") else \
            "`chromium` on PATH or /usr/bin/chromium"
        unavailable(f"Chromium not found ({where}): install Debian's `chromium` package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        unavailable(f"the Python package `playwright` is not importable ({e})")
    pw = sync_playwright().start()
    try:
        yield pw, exe
    finally:
        pw.stop()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    server = JupyterLabServer(tmp_path_factory.mktemp("jupyterlab"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def page(sync_playwright_api, lab, tmp_path_factory, artifacts):
    pw, exe = sync_playwright_api
    try:
        ctx = launch_browser(pw, exe, tmp_path_factory.mktemp("chromium-profile"))
    except Exception as e:
        unavailable(f"Chromium ({exe}) cannot be started: {str(e).splitlines()[0]}")
    try:
        pg = ctx.pages[0] if ctx.pages else ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.ppg_console = []  # browser console errors/warnings, written next to the screenshot on failure
        pg.on("console", lambda m: m.type in ("error", "warning") and pg.ppg_console.append(f"[{m.type}] {m.text}"))
        pg.on("pageerror", lambda e: pg.ppg_console.append(f"[pageerror] {e}"))
        t0 = time.monotonic()
        open_lab(pg, lab)
        print(f"JupyterLab loaded in the browser in {time.monotonic() - t0:.1f} s")
        yield pg
    finally:
        try:
            ctx.close()
        except Exception:
            pass


@pytest.fixture()
def notebook_page(page, lab, artifacts, request):
    "The page; on failure a screenshot goes to $PPG_ARTIFACTS; the open notebook is always closed (kernel shut down)."
    n_failed = request.session.testsfailed  # the call-phase report is counted before teardown runs
    page.ppg_console.clear()
    try:
        yield page
    finally:
        if request.session.testsfailed > n_failed:
            stem = f"failed_{request.node.name}".replace("/", "_")
            try:
                (artifacts / f"{stem}.console.txt").write_text("\n".join(page.ppg_console[-300:]))
                page.screenshot(path=str(artifacts / f"{stem}.png"))
            except Exception:
                pass
        try:
            close_notebook(page)
        except Exception:  # a wedged page: reload JupyterLab for the next test
            try:
                page.reload()
                open_lab(page, lab)
            except Exception:
                pass


def _open_and_run(page, lab, name: str, budget: float) -> dict:
    src = NBS / name
    nb = json.loads((Path(lab.root) / "nbs" / name).read_text())
    open_notebook(page, f"nbs/{name}")
    st = run_cells(page, nb, name, budget, cells_to_skip(nb, tst_flags()))
    assert st["ran"] > 0 or not any(c["cell_type"] == "code" for c in nb["cells"]), f"{src}: no cell ran"
    assert not widget_errors(page), f"{name}: a widget failed to render: {widget_errors(page)}"
    return st


# ------------------------------------------------------------------------------------------------ the K slider test
def check_k_slider(page, artifacts: Path, prefix: str, timeout: float = 60.0):
    "Find the K slider and its plotly figure, screenshot, press an arrow key on the slider, check the figure changed."
    slider = find_slider(page, "K")
    try:
        slider.first.wait_for(state="visible", timeout=timeout * 1000)
    except Exception:
        raise AssertionError(f"no ipywidgets slider described 'K' became visible within {timeout:.0f} s "
                             f"(sliders seen: {page.locator('.widget-slider .widget-label').all_inner_texts()})") from None
    n_k = slider.count()  # several explorers may each have a K slider: the first one is moved
    slider = slider.first
    handle = slider.locator(".noUi-handle").first
    # the figure: in the slider's output area, else its cell, else anywhere in the notebook
    try:
        page.locator(".jp-Notebook .js-plotly-plot .main-svg").first.wait_for(state="attached", timeout=timeout * 1000)
    except Exception:
        raise AssertionError(f"no plotly figure rendered in the notebook within {timeout:.0f} s") from None
    scope = None
    for cls in ("jp-OutputArea", "jp-Cell", "jp-Notebook"):
        cand = slider.locator(f"xpath=ancestor::*[contains(concat(' ', normalize-space(@class), ' '), ' {cls} ')][1]")
        if cand.count() and cand.first.locator(".js-plotly-plot").count():
            scope = cand.first
            break
    assert scope is not None, "no plotly figure (.js-plotly-plot) rendered in the notebook"
    page.wait_for_function("(el) => el.querySelectorAll('.js-plotly-plot .main-svg').length > 0 && "
                           "Array.from(el.querySelectorAll('.js-plotly-plot')).every(g => (g.data||[]).length > 0)",
                           arg=scope.element_handle(), timeout=timeout * 1000)
    assert not widget_errors(page), f"a widget failed to render: {widget_errors(page)}"
    before = plotly_state(scope)
    assert all(p["width"] > 50 and p["height"] > 50 and p["svg"] > 0 for p in before), f"figure not drawn: {before}"
    v0, vmax = handle.get_attribute("aria-valuenow"), handle.get_attribute("aria-valuemax")
    shot = scope if scope.evaluate("el => el.classList.contains('jp-OutputArea')") else page
    slider.scroll_into_view_if_needed()
    shot.screenshot(path=str(artifacts / f"{prefix}_before.png"))
    # move K by one step with the keyboard on the focused slider handle
    key = "ArrowLeft" if v0 is not None and vmax is not None and float(v0) >= float(vmax) else "ArrowRight"
    handle.focus()
    handle.press(key)
    try:
        page.wait_for_function("([h, v]) => h.getAttribute('aria-valuenow') !== v",
                               arg=[handle.element_handle(), v0], timeout=10_000)
    except Exception:
        raise AssertionError(f"the K slider did not move on {key} (value {v0})") from None
    v1 = handle.get_attribute("aria-valuenow")
    # the figure re-renders with different data (a round trip through the kernel)
    assert wait_plotly_changed(page, scope, before, timeout), \
        f"K moved {v0} -> {v1} but the plotly figure's data did not change within {timeout:.0f} s"
    prev, t0 = None, time.monotonic()  # let it settle (several traces may update in turn), then capture
    while time.monotonic() - t0 < 10:
        cur = plotly_state(scope)
        if cur == prev:
            break
        prev = cur
        page.wait_for_timeout(400)
    after = plotly_state(scope)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    shot.screenshot(path=str(artifacts / f"{prefix}_after.png"))
    assert [p["data"] for p in after] != [p["data"] for p in before], "the figure's data did not change"
    assert all(p["svg"] > 0 and p["ntraces"] > 0 for p in after), f"figure not drawn after the change: {after}"
    assert not widget_errors(page), f"a widget failed to render: {widget_errors(page)}"
    return {"K": (v0, v1), "figures": len(after), "k_sliders": n_k}


HARNESS_CELLS = [  # shaped like the widgets notebook: sliders K, N, horizon, n and a FigureWidget with two traces
    "import numpy as np, ipywidgets as widgets, plotly.graph_objects as go",
    "x = np.arange(20)\n"
    "fig = go.FigureWidget(data=[go.Scatter(x=x, y=np.minimum(x, 3), mode='lines+markers', name='min(x, K)'),\n"
    "                            go.Bar(x=x, y=np.zeros(20), name='N', opacity=0.3)],\n"
    "                      layout=dict(width=600, height=320, title='harness: min(x, K)', margin=dict(t=40, b=30)))\n"
    "k = widgets.IntSlider(value=3, min=1, max=10, description='K')\n"
    "others = [widgets.IntSlider(value=v, min=1, max=100, description=d) for d, v in [('N', 8), ('horizon', 20), ('n', 4)]]\n"
    "def _update(change):\n"
    "    with fig.batch_update(): fig.data[0].y = np.minimum(x, k.value)\n"
    "for w in [k, *others]: w.observe(_update, names='value')\n"
    "widgets.VBox([widgets.HBox([k, others[0]]), widgets.HBox(others[1:]), fig])",
]


def _harness_notebook(lab, name: str, cells: list[str]) -> tuple[str, dict]:
    "Write a generated notebook into the served tree (never into the repo); return its served path and JSON."
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells])
    d = Path(lab.root) / "_browser_harness"
    d.mkdir(exist_ok=True)
    nbformat.write(nb, d / name)
    return f"_browser_harness/{name}", json.loads((d / name).read_text())


def test_browser_harness_k_slider(notebook_page, lab, artifacts):
    "The machinery itself (ipywidgets + plotly FigureWidget via anywidget in JupyterLab), on a generated notebook."
    path, nb = _harness_notebook(lab, "k_slider.ipynb", HARNESS_CELLS)
    t0 = time.monotonic()
    open_notebook(notebook_page, path)
    t1 = time.monotonic()
    st = run_cells(notebook_page, nb, "k_slider.ipynb", 60, [])
    t2 = time.monotonic()
    res = check_k_slider(notebook_page, artifacts, "harness_k_slider")
    print(f"harness: open+kernel {t1 - t0:.1f} s, run {t2 - t1:.1f} s (in page {st['elapsed']:.1f} s), "
          f"slider check {time.monotonic() - t2:.1f} s")
    assert [float(v) for v in res["K"]] == [3, 4]


def test_browser_harness_reports_errors_and_timeouts(notebook_page, lab):
    "The runner names the failing cell and its error, skips nbdev-skipped cells, and enforces the time budget."
    cells = ["x = 1", "#| eval: false\nraise RuntimeError('must be skipped')", "#| full\nraise RuntimeError('skipped')",
             "def f():\n    return 1 / 0\nf()", "x = 2"]
    path, nb = _harness_notebook(lab, "broken.ipynb", cells)
    assert cells_to_skip(nb, tst_flags()) == [1, 2]
    open_notebook(notebook_page, path)
    with pytest.raises(NotebookRunError, match=r"(?s)cell 3 failed with ZeroDivisionError: division by zero.*"
                                               r"def f\(\):.*1 / 0"):
        run_cells(notebook_page, nb, "broken.ipynb", 30, cells_to_skip(nb, tst_flags()))
    close_notebook(notebook_page)
    path, nb = _harness_notebook(lab, "slow.ipynb", ["import time", "time.sleep(60)", "x = 3"])
    open_notebook(notebook_page, path)
    t0 = time.monotonic()
    with pytest.raises(NotebookRunError, match=r"(?s)not finished within its budget of 2 s; still running cell 1"):
        run_cells(notebook_page, nb, "slow.ipynb", 2, [])
    assert time.monotonic() - t0 < 10


def test_widgets_notebook_k_slider(notebook_page, lab, artifacts):
    "nbs/03_widgets.ipynb: run all, the K slider moves, the plotly figure re-renders with different data."
    assert (NBS / WIDGETS_NB).exists(), f"nbs/{WIDGETS_NB} is missing"
    _open_and_run(notebook_page, lab, WIDGETS_NB, BUDGETS.get(WIDGETS_NB, DEFAULT_BUDGET))
    check_k_slider(notebook_page, artifacts, "widgets_k_slider")


# ------------------------------------------------------------------------------------------ the browser notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(notebook_page, lab, name):
    budget = BUDGETS.get(name, DEFAULT_BUDGET)
    st = _open_and_run(notebook_page, lab, name, budget)
    print(f"{name}: {st['ran']} cells in {st['elapsed']:.1f} s (budget {budget:.0f} s)")
