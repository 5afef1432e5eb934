"""Drive JupyterLab in headless Chromium (Playwright, Debian's /usr/bin/chromium) for tests/test_browser.py.

Nothing here downloads a browser: Playwright is pointed at the installed Chromium with `executable_path`.
The server runs on 127.0.0.1 with a random token and temporary Jupyter config/data/runtime/settings dirs, and serves a
*copy* of `nbs/` (other top-level repo entries are symlinked in), so executing notebooks never writes into the repo.
Kernels run as a reader's would: `IN_TEST` is removed from their environment (widget code must not take a static path).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / "nbs"

# Flags that keep Chromium off the (closed) network and working as root in a container.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


# ----------------------------------------------------------------------------------------------------------- helpers
def in_ci() -> bool:
    "True when the environment variable CI is set to something truthy (CI must never skip the browser test)."
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def chromium_path() -> str | None:
    "The Chromium binary to drive: $PPG_CHROMIUM, else `chromium` on PATH, else /usr/bin/chromium (None if absent)."
    cand = os.environ.get("PPG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return cand if os.path.isfile(cand) and os.access(cand, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_notebooks() -> list[str]:
    "The notebooks the browser test runs (settings.ini `browser_notebooks`; `make test`'s nbdev_test skips them)."
    m = re.search(r"^browser_notebooks\s*=\s*(.*)$", (REPO / "settings.ini").read_text(), re.M)
    return m.group(1).split() if m else []


def tst_flags() -> set[str]:
    "The cell flags nbdev_test skips (settings.ini `tst_flags`)."
    m = re.search(r"^tst_flags\s*=\s*(.*)$", (REPO / "settings.ini").read_text(), re.M)
    return set(m.group(1).split()) if m else set()


_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*(.*?)\s*$")


def cell_directives(source: str) -> dict[str, list[str]]:
    "nbdev-style `#| name args` directives at the top of a cell (quarto-style `eval: false` keeps its colon)."
    out = {}
    for line in source.splitlines():
        if not line.strip():
            continue
        m = _DIRECTIVE.match(line)
        if not m:
            break
        parts = m.group(1).split()
        if parts:
            out[parts[0]] = parts[1:]
    return out


def cells_to_skip(nb_json: dict, flags: set[str]) -> list[int]:
    "Indices of cells nbdev_test would not run: `#| eval: false`, cells with a flag in `flags`, `nbdev_export(` calls."
    skip = []
    for i, c in enumerate(nb_json["cells"]):
        if c["cell_type"] != "code":
            continue
        src = "".join(c["source"])
        d = cell_directives(src)
        if ("nbdev_export" + "(" in src or (d.get("eval:", [""]) + [""])[0].lower() == "false"
                or flags & set(d)):
            skip.append(i)
    return skip


def strip_ansi(s: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", s)


# ------------------------------------------------------------------------------------------------------------ server
def _die_with_parent():
    "In the child before exec (Linux): SIGTERM when the test process dies, even if it is killed without teardown."
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class JupyterLabServer:
    "A JupyterLab server on 127.0.0.1 with a random token, isolated Jupyter dirs and a copy of the repo's notebooks."

    def __init__(self, workdir: Path, startup_timeout: float = 120.0):
        self.workdir = Path(workdir)
        self.startup_timeout = startup_timeout
        self.token = secrets.token_hex(24)
        self.port = None
        self.proc = None
        self.log_path = self.workdir / "jupyterlab.log"
        self.root = self.workdir / "root"

    # the served tree: nbs/ copied, settings.ini copied, other visible top-level entries symlinked (not ppg_nb/)
    def _make_root(self):
        self.root.mkdir(parents=True)
        shutil.copytree(NBS, self.root / "nbs", ignore=shutil.ignore_patterns(
            ".ipynb_checkpoints", "__pycache__", "_proc", "_docs", ".virtual_documents"))
        shutil.copy2(REPO / "settings.ini", self.root / "settings.ini")
        for p in REPO.iterdir():
            if p.name.startswith(".") or p.name in ("nbs", "settings.ini", "ppg_nb", "_docs", "_proc"):
                continue
            (self.root / p.name).symlink_to(p)

    def _write_config(self, dirs: dict[str, Path]):
        cfg = {
            "ServerApp": {"jpserver_extensions": {"jupyter_lsp": False}},
            "LabApp": {"news_url": None,
                       "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate"},
        }
        (dirs["JUPYTER_CONFIG_DIR"] / "jupyter_server_config.json").write_text(json.dumps(cfg))
        settings = dirs["JUPYTERLAB_SETTINGS_DIR"]
        user_settings = {
            # never write back to disk (the served files are copies anyway)
            "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
            # all cells in the DOM (no virtualisation), start python3 without asking
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
            # no news / update checks (no network)
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        }
        for plugin, values in user_settings.items():
            f = settings / f"{plugin}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(values))

    def start(self):
        self._make_root()
        dirs = {k: self.workdir / v for k, v in dict(
            JUPYTER_CONFIG_DIR="config", JUPYTER_DATA_DIR="data", JUPYTER_RUNTIME_DIR="runtime",
            IPYTHONDIR="ipython", JUPYTERLAB_SETTINGS_DIR="lab-settings",
            JUPYTERLAB_WORKSPACES_DIR="lab-workspaces").items()}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self._write_config(dirs)
        env = {**os.environ, **{k: str(v) for k, v in dirs.items()}}
        env.pop("IN_TEST", None)  # a reader's kernel: widget code must not take its nbdev_test (static) path
        env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        last_err = None
        for _ in range(3):  # a free port can be taken between bind and listen: retry on a fresh one
            self.port = free_port()
            cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
                   "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                   "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
                   f"--LabApp.user_settings_dir={dirs['JUPYTERLAB_SETTINGS_DIR']}",
                   f"--LabApp.workspaces_dir={dirs['JUPYTERLAB_WORKSPACES_DIR']}",
                   "--LabApp.expose_app_in_browser=True"]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                cmd.append("--allow-root")
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
            try:
                self._wait_ready()
                return self
            except RuntimeError as e:
                last_err = e
                self.stop()
        raise last_err

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, path: str = "") -> str:
        return f"{self.base_url}/lab{('/tree/' + path) if path else ''}?token={self.token}"

    def _api(self, path: str, method: str = "GET", timeout: float = 5.0):
        req = urllib.request.Request(f"{self.base_url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def _wait_ready(self):
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self._api("/api/status", timeout=2)
                with urllib.request.urlopen(self.lab_url(), timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"JupyterLab did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        "Shut down kernels and the server: REST shutdown; if it hangs, SIGTERM then SIGKILL to the group we started."
        p, self.proc = self.proc, None
        if p is None:
            return
        try:
            if p.poll() is None:
                try:
                    self._api("/api/shutdown", method="POST", timeout=5)  # the server shuts its kernels down
                except Exception:
                    pass
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:  # the group (server + kernels) is ours: start_new_session=True
                    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                        try:
                            os.killpg(p.pid, sig)
                        except ProcessLookupError:
                            break
                        try:
                            p.wait(timeout=wait)
                            break
                        except subprocess.TimeoutExpired:
                            continue
        finally:
            self._log.close()


# ----------------------------------------------------------------------------------------------------------- browser
def launch_browser(playwright, exe: str, user_data_dir: Path, viewport=(1400, 1000)):
    "A persistent (fresh, temporary profile) headless Chromium context on the installed binary."
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=exe, headless=True, chromium_sandbox=False, args=CHROMIUM_ARGS,
        viewport={"width": viewport[0], "height": viewport[1]}, ignore_default_args=["--enable-automation"],
        device_scale_factor=1, timeout=60_000)


def open_lab(page, server: JupyterLabServer, timeout: float = 120.0):
    "Load JupyterLab and wait until the app is restored."
    page.goto(server.lab_url(), wait_until="domcontentloaded", timeout=timeout * 1000)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=timeout * 1000)
    page.evaluate("async () => { await window.jupyterapp.started; await window.jupyterapp.restored;"
                  " window.jupyterapp.shell.collapseLeft(); }")
    page.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=timeout * 1000)


_OPEN_JS = """
async ({path, timeout}) => {
  const app = window.jupyterapp;
  let expired = false;
  const work = (async () => {
    await app.restored;
    const panel = await app.commands.execute('docmanager:open',
        {path, factory: 'Notebook', kernel: {name: 'python3'}});
    await panel.context.ready;
    await panel.revealed;
    app.shell.activateById(panel.id);
    window.__ppgPanel = panel;
    await panel.sessionContext.ready;
    while (!expired) {
      const k = panel.sessionContext.session && panel.sessionContext.session.kernel;
      if (k && k.connectionStatus === 'connected' && k.status === 'idle') break;
      await new Promise(r => setTimeout(r, 100));
    }
    return {id: panel.id, cells: panel.content.widgets.length};
  })();
  const timer = new Promise((_, reject) => setTimeout(() => {
    expired = true;
    const p = window.__ppgPanel, k = p && p.sessionContext.session && p.sessionContext.session.kernel;
    reject(new Error(`opening ${path} with an idle python3 kernel took more than ${timeout} ms (kernel: ` +
                     (k ? k.status + '/' + k.connectionStatus : 'none') + ')'));
  }, timeout));
  return await Promise.race([work, timer]);
}
"""

# Run code cells one by one ("Run Selected Cell"), skipping those nbdev_test skips; stop at the first error output.
_RUN_JS = """
({skip}) => {
  const app = window.jupyterapp, panel = window.__ppgPanel, nb = panel.content;
  const st = window.__ppgRun = {done: false, current: -1, ran: 0, error: null, t0: Date.now()};
  const errOf = cell => cell.model.outputs.toJSON().find(o => o.output_type === 'error');
  (async () => {
    try {
      for (let i = 0; i < nb.widgets.length; i++) {
        const cell = nb.widgets[i];
        if (cell.model.type !== 'code' || skip.includes(i)) continue;
        st.current = i;
        app.shell.activateById(panel.id);
        nb.activeCellIndex = i;
        nb.deselectAll();
        const ok = await app.commands.execute('notebook:run-cell');
        st.ran += 1;
        const err = errOf(cell);
        if (err || ok === false) {
          cell.node.scrollIntoView({block: 'end'});
          st.error = {index: i, source: cell.model.sharedModel.getSource(),
                      ename: err ? err.ename : 'run failed', evalue: err ? err.evalue : 'notebook:run-cell returned false',
                      traceback: err ? (err.traceback || []).join('\\n') : ''};
          break;
        }
      }
    } catch (e) {
      st.error = {index: st.current, source: st.current >= 0 ? nb.widgets[st.current].model.sharedModel.getSource() : '',
                  ename: 'exception in the page', evalue: String(e && e.stack || e), traceback: ''};
    }
    st.elapsed = (Date.now() - st.t0) / 1000;
    st.done = true;
  })();
  return true;
}
"""

_CLOSE_JS = """
async () => {
  const panel = window.__ppgPanel;
  window.__ppgPanel = undefined;
  if (!panel || panel.isDisposed) return;
  try { await panel.sessionContext.shutdown(); } catch (e) {}
  panel.context.model.dirty = false;
  panel.dispose();
}
"""


class NotebookRunError(AssertionError):
    pass


def open_notebook(page, path: str, timeout: float = 60.0) -> dict:
    "Open `path` (relative to the served root) in JupyterLab with a python3 kernel; wait for the kernel to be idle."
    return page.evaluate(_OPEN_JS, {"path": path, "timeout": timeout * 1000})


def run_cells(page, nb_json: dict, name: str, budget: float, skip: list[int]) -> dict:
    "Run the open notebook's code cells (minus `skip`) within `budget` s; raise NotebookRunError naming the cell."
    page.evaluate(_RUN_JS, {"skip": skip})
    try:
        page.wait_for_function("() => window.__ppgRun.done", timeout=budget * 1000, polling=250)
    except Exception as e:
        if "Timeout" not in type(e).__name__ and "imeout" not in str(e):
            raise
        st = page.evaluate("() => window.__ppgRun")
        i = st["current"]
        src = "".join(nb_json["cells"][i]["source"]) if i >= 0 else ""
        page.evaluate("async () => { try { await window.__ppgPanel.sessionContext.session.kernel.interrupt(); }"
                      " catch (e) {} }")
        raise NotebookRunError(f"{name}: not finished within its budget of {budget:.0f} s; still running cell "
                               f"{i}:\n{_head(src)}") from None
    st = page.evaluate("() => window.__ppgRun")
    if st["error"]:
        e = st["error"]
        tb = strip_ansi(e["traceback"])
        tb = "\n".join(tb.splitlines()[-25:])
        raise NotebookRunError(f"{name}: cell {e['index']} failed with {e['ename']}: {e['evalue']}\n"
                               f"--- cell source (head) ---\n{_head(e['source'])}\n--- traceback (tail) ---\n{tb}")
    return st


def close_notebook(page):
    "Shut down the open notebook's kernel and close it without saving."
    page.evaluate(_CLOSE_JS)


def _head(src: str, n: int = 8) -> str:
    lines = src.splitlines()
    return "\n".join(lines[:n]) + ("\n..." if len(lines) > n else "")


# ------------------------------------------------------------------------------------------------ widgets + plotly
# Signature of every plotly graph div inside `root`: the traces' data as JSON (typed arrays as plain lists).
_PLOTS_JS = """
(root) => Array.from(root.querySelectorAll('.js-plotly-plot')).map(gd => {
  const plain = v => (ArrayBuffer.isView(v) ? Array.from(v) : v);
  const data = (gd.data || []).map(t => Object.fromEntries(Object.entries(t).map(([k, v]) => [k, plain(v)])));
  const r = gd.getBoundingClientRect();
  return {data: JSON.stringify(data), ntraces: (gd.data || []).length, width: r.width, height: r.height,
          svg: gd.querySelectorAll('.main-svg').length};
})
"""


def plotly_state(locator) -> list[dict]:
    "For each plotly graph div under `locator`: its data as JSON, trace count, size and number of drawn svg layers."
    return locator.evaluate(_PLOTS_JS)


def wait_plotly_changed(page, locator, before: list[dict], timeout: float) -> bool:
    "Wait until the plotly data under `locator` differs from `before` (a `plotly_state`); False on timeout."
    # compare JS-serialised to JS-serialised (Python's json.dumps escapes non-ASCII: never compare across the two)
    js = f"([el, b]) => JSON.stringify(({_PLOTS_JS.strip()})(el).map(p => p.data)) !== JSON.stringify(b)"
    try:
        page.wait_for_function(js, arg=[locator.element_handle(), [p["data"] for p in before]],
                               timeout=timeout * 1000, polling=100)
        return True
    except Exception as e:
        if "imeout" in type(e).__name__ + str(e):
            return False
        raise


def widget_errors(page) -> list[str]:
    "Texts of ipywidgets' 'Error displaying widget' placeholders in the open notebook."
    return page.evaluate("""() => Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output'))
        .map(e => e.innerText).filter(t => t.includes('Error displaying widget')).map(t => t.slice(0, 300))""")


def find_slider(page, description: str):
    "The ipywidgets slider whose description label reads exactly `description`."
    exact = re.compile(rf"^\s*{re.escape(description)}\s*$")
    return page.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=exact))
