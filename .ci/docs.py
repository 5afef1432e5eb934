"""Build the static documentation site `_site/` from the notebooks in nbs/ (mkdocs + mkdocs-jupyter, no Quarto).

`python .ci/docs.py` (what `make docs` runs) does three things:

1. **Execute** every notebook in nbs/, each in a fresh process, the way `nbdev_test --flags full` runs it (nbdev's
   `test_nb`): cells flagged with a settings.ini `tst_flags` flag other than `full` (`gpu`, `slow`), `#| eval: false`
   cells and `nbdev_export()` calls are skipped, `IN_TEST=1`, the working directory is nbs/. As nbdev's doc processor
   does, a `show_doc(name)` cell is added after each exported definition that has none.
2. **Prepare** each executed notebook for reading, following nbdev's doc conventions: cells marked `export`,
   `exporti`, `hide` or `default_exp` are dropped, `#|` lines are removed, `show_doc` cells become their markdown;
   plotly figures are redrawn by the site's own plotly.js (`assets/plotly.min.js`), ipywidgets show their text
   fallback, links to `X.ipynb` point at `X.html`. The result goes to `_docs_build/src/` (mkdocs' `docs_dir`) with
   nbs/images, MathJax 2 (from the `jupyter-server-mathjax` wheel) and plotly.js: nothing is fetched from a CDN.
3. **Render** with `mkdocs build` into `_site/` (config: mkdocs.yml). Pages are flat (`00_core.html`), so the site
   also reads straight from disk (`_site/index.html`).

Prepared notebooks are cached in `_docs_build/executed/`, keyed by a hash of the notebook, the package sources,
settings.ini and this script: a rebuild only re-executes what changed (`--force` re-executes everything). The exit
status is 1 when a notebook fails; its page is still built, showing the error.

Nothing here needs a network or a GPU. A notebook reads its own settings from the environment, which the build passes
on: 15_real's step-by-step cells need `PPG_DATA` (the folder of the Consistent-LLMs files) and print NOT RUN without it.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, BUILD, SITE = ROOT / "nbs", ROOT / "_docs_build", ROOT / "_site"
SRC, CACHE = BUILD / "src", BUILD / "executed"
RUN_FLAGS = {"full"}  # the flags CI passes to nbdev_test (`make test`): these cells run, the other tst_flags do not
PLOTLY_MIME, WIDGET_MIME = "application/vnd.plotly.v1+json", "application/vnd.jupyter.widget-view+json"
SITE_CSS = """\
.md-grid { max-width: 1600px; }  /* room for the figures and the show_doc tables */
.jupyter-wrapper .jp-OutputArea-output { overflow-x: auto; }  /* a figure wider than the text scrolls, not under the toc */
"""
MATHJAX_CONFIG = """\
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}});
MathJax.Ajax.loadComplete("[MathJax]/config/local/docs.js");
"""  # jupyter-server-mathjax ships the STIX-Web fonts only, as the classic Jupyter notebook configures MathJax


def notebooks() -> list[Path]:
    "Every notebook in nbs/, in the order of their numbers (index.ipynb, the home page, sorts last: mkdocs puts it first)."
    return sorted(NBS.glob("*.ipynb"))


def skip_flags() -> set[str]:
    "The settings.ini `tst_flags` that CI does not run (`gpu`, `slow`)."
    m = re.search(r"^tst_flags\s*=\s*(.*)$", (ROOT / "settings.ini").read_text(), re.M)
    return set(m.group(1).split() if m else ()) - RUN_FLAGS


def cache_key(nb: Path) -> str:
    "A hash of what an executed page depends on: the notebook, the package, settings.ini and this script."
    h = hashlib.sha256()
    for f in [nb, ROOT / "settings.ini", Path(__file__), *sorted((ROOT / "ppg_nb").glob("*.py"))]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------- execute
def execute(nb_path: Path):
    "Run `nb_path` as nbdev's `test_nb` does, with nbdev's `show_doc` cells added; return (notebook, error or None)."
    from execnb.shell import CaptureShell
    from fastcore.basics import str2bool
    from fastcore.xtras import working_directory
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor, nb_lang
    from nbdev.processors import add_show_docs

    os.environ["IN_TEST"] = "1"
    # test_nb reads the frontmatter for `skip_exec`; the page keeps the notebook's own `# title` / `> description` cell
    # (nbdev's FrontmatterProc replaces it by Quarto YAML and keeps one line of the description)
    frontmatter = NBProcessor(nb_path, procs=FrontmatterProc, process=True).nb.frontmatter_
    nb = NBProcessor(nb_path, procs=add_show_docs, process=True).nb
    if str2bool(frontmatter.get("skip_exec", False)) or nb_lang(nb) != "python": return nb, None
    flags = skip_flags()

    def _no_eval(cell):  # the rule of nbdev.test.test_nb (a closure there, so repeated here)
        if cell.cell_type != "code": return True
        if "nbdev_export" + "(" in cell.source: return True
        direc = getattr(cell, "directives_", {}) or {}
        if direc.get("eval:", [""])[0].lower() == "false": return True
        return flags & direc.keys()

    later = []
    def _postpone_failed_doc(cell):  # an added show_doc can name a type the notebook defines further down: retry it last
        if getattr(cell, "has_sd", False) and shell.exc is not None:
            shell.exc, cell.outputs = None, []
            later.append(cell)

    shell = CaptureShell(nb_path)
    shell.run_cell("from nbdev.showdoc import show_doc")
    with working_directory(nb_path.parent):
        try:
            shell.run_all(nb, exc_stop=True, preproc=_no_eval, postproc=_postpone_failed_doc)
        except Exception:
            return nb, shell.prettytb(fname=nb_path)
        for cell in later:
            shell.cell(cell)
            if shell.exc is not None:  # still failing: the page goes without this API entry, as a warning
                print(f"warning: {nb_path.name}: {cell.source} failed: {shell.exc!r}", file=sys.stderr)
                shell.exc, cell.outputs = None, []
    return nb, None


# ----------------------------------------------------------------------------------------------------------- prepare
def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def plotly_html(figure: dict, first: bool) -> str:
    "A figure drawn by the site's plotly.js (loaded before the first figure of a page), with no CDN script."
    import plotly.io as pio
    div = pio.to_html(figure, include_plotlyjs=False, include_mathjax=False, full_html=False, default_height=525)
    return ('<script src="assets/plotly.min.js"></script>\n' if first else "") + div


def widget_html(text: str) -> str:
    "The static fallback of an ipywidget: its text form, and where to use it."
    return ('<div class="widget-fallback"><p><em>An interactive widget: run this notebook in JupyterLab '
            f"(<code>make lab</code>) to use it.</em></p><pre>{html.escape(text)}</pre></div>")


def unquarto(markdown: str) -> str:
    "Quarto's link attributes in show_doc's markdown, `[source](url){target=\"_blank\" ...}`, as an HTML link."
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}", r'<a href="\2" \3>\1</a>', markdown)


def prepare(nb):
    "Turn an executed notebook into the page a reader sees (nbdev's doc conventions, offline plotly, widget fallback)."
    from nbdev.processors import _hide_dirs, _is_showdoc

    cells, seen_plot = [], False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = re.sub(r"\]\(((?!https?:)[^)#]+)\.ipynb", r"](\1.html", cell.source)
        if cell.cell_type != "code":
            cells.append(cell)
            continue
        if (getattr(cell, "directives_", None) or {}).keys() & _hide_dirs: continue
        cell.source = re.sub(r"^\s*#\s*\|.*\n?", "", cell.source, flags=re.M).strip("\n")
        if not cell.source.strip() and not cell.get("outputs"): continue
        if _is_showdoc(cell):  # nbdev shows the documentation, not the call
            cells += [dict(cell_type="markdown", metadata={}, source=unquarto(_text(o["data"]["text/markdown"])))
                      for o in cell.get("outputs", []) if "text/markdown" in o.get("data", {})]
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if out["output_type"] in ("execute_result", "display_data") and not data:
                continue  # an object that displayed itself (`_ipython_display_`) leaves an empty result behind
            if PLOTLY_MIME in data:
                out["data"] = {"text/html": plotly_html(data[PLOTLY_MIME], first=not seen_plot)}
                seen_plot = True
            elif "window.PlotlyConfig" in _text(data.get("text/html", "")):
                continue  # plotly's notebook renderer inlines 4.8 MB of plotly.js once per notebook: the site serves it
            elif WIDGET_MIME in data:
                out["data"] = {"text/html": widget_html(_text(data.get("text/plain", "")))}
            outputs.append(out)
        cell["outputs"] = outputs
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("widgets", None)  # no widget state: mkdocs-jupyter would load the widget manager from a CDN
    return nb


def build_page(nb_path: Path, key: str) -> tuple[str, float, str | None]:
    "Execute and prepare one notebook into the cache, stored under `key` if it ran through: (name, seconds, error)."
    from execnb.nbio import write_nb

    start, page = time.perf_counter(), CACHE / nb_path.name
    nb, error = execute(nb_path)
    write_nb(prepare(nb), page)
    if error is None: page.with_suffix(".key").write_text(key)
    else: page.with_suffix(".key").unlink(missing_ok=True)
    return nb_path.name, time.perf_counter() - start, error


def is_cached(nb_path: Path, key: str) -> bool:
    "True when the cache holds the page of `nb_path` built for the same `key`."
    key_file = (CACHE / nb_path.name).with_suffix(".key")
    return (CACHE / nb_path.name).exists() and key_file.exists() and key_file.read_text() == key


# ------------------------------------------------------------------------------------------------------------ render
def copy_assets():
    "nbs/images, MathJax 2 with a local config, plotly.js and the site's CSS into the mkdocs source folder."
    import jupyter_server_mathjax
    import plotly

    shutil.copytree(NBS / "images", SRC / "images", dirs_exist_ok=True)
    mathjax = SRC / "assets" / "mathjax"
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", mathjax, dirs_exist_ok=True)
    (mathjax / "config" / "local").mkdir(parents=True, exist_ok=True)
    (mathjax / "config" / "local" / "docs.js").write_text(MATHJAX_CONFIG)
    shutil.copy2(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", SRC / "assets" / "plotly.min.js")
    (SRC / "assets" / "docs.css").write_text(SITE_CSS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="build only these notebooks (e.g. 00_core.ipynb); default: all")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at once (default 2)")
    parser.add_argument("--force", action="store_true", help="re-execute notebooks whose cached page is current")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    keys = {nb: cache_key(nb) for nb in ([NBS / n for n in args.names] if args.names else notebooks())}
    todo = [nb for nb, key in keys.items() if args.force or not is_cached(nb, key)]
    print(f"{len(keys) - len(todo)} notebooks unchanged since their last run, {len(todo)} to execute", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    failed = []
    # a fresh process per notebook (spawn, one task each): what one notebook sets in os.environ or sys.modules stays there
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        for name, seconds, error in pool.map(build_page, todo, [keys[nb] for nb in todo]):
            print(f"{name:28} {seconds:6.1f} s{'  FAILED' if error else ''}", flush=True)
            if error:
                failed.append(name)
                print(error, file=sys.stderr)

    shutil.rmtree(SRC, ignore_errors=True)
    SRC.mkdir(parents=True)
    for nb in notebooks():
        if (CACHE / nb.name).exists(): shutil.copy2(CACHE / nb.name, SRC / nb.name)
    copy_assets()
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--clean", "--quiet", "-f", str(ROOT / "mkdocs.yml")],
                   check=True, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    print(f"site: {SITE / 'index.html'} ({time.perf_counter() - start:.0f} s)")
    if failed:
        print(f"notebooks that failed to execute (their pages show the error): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
