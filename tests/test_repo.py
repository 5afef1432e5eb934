"""The repository is consistent: library = export of the notebooks, notebooks clean, README = index notebook."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _copy_tree(tmp_path: Path) -> Path:
    "A copy of the files git would commit (tracked and untracked-not-ignored), without touching the work tree."
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    dest = tmp_path / "repo"
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _differences(a: Path, b: Path, pattern: str) -> list[str]:
    names = {p.relative_to(a) for p in a.glob(pattern)} | {p.relative_to(b) for p in b.glob(pattern)}
    return sorted(str(n) for n in names if not (a / n).is_file() or not (b / n).is_file()
                  or (a / n).read_bytes() != (b / n).read_bytes())


def _nbdev(command: str) -> str:
    return str(Path(sys.executable).parent / command)


def test_library_is_the_export_of_the_notebooks(tmp_path):
    copy = _copy_tree(tmp_path)
    subprocess.run([_nbdev("nbdev_export")], cwd=copy, check=True, capture_output=True)
    drift = _differences(ROOT / "ppg_nb", copy / "ppg_nb", "*.py")
    assert not drift, f"nbdev_export would change {drift}: edit the notebooks, run nbdev_export, commit both"


def test_notebooks_are_clean(tmp_path):
    copy = _copy_tree(tmp_path)
    subprocess.run([_nbdev("nbdev_clean")], cwd=copy, check=True, capture_output=True)
    dirty = _differences(ROOT / "nbs", copy / "nbs", "*.ipynb")
    assert not dirty, f"nbdev_clean would change {dirty}: notebooks are stored without outputs; run nbdev_clean"


def test_readme_is_generated_from_index():
    result = subprocess.run([sys.executable, ".ci/readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def test_readme_test_command_covers_notebooks_and_tests():
    "The README's test command is `make test`: nbdev_test runs every notebook the browser test does not, then pytest."
    import re
    readme = (ROOT / "README.md").read_text()
    test_section = readme.split("## Test", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert test_section.strip() == "make test"
    recipe = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    nbdev_line = next(line for line in recipe.splitlines() if "nbdev_test" in line)
    assert "pytest" in recipe.split(nbdev_line, 1)[1] and "--flags full" in nbdev_line
    skip = re.compile(re.search(r"--skip_file_re '([^']*)'", nbdev_line).group(1))
    sys.path.insert(0, str(ROOT / "tests"))
    from jupyterlab_driver import browser_notebooks
    notebooks = sorted(p.name for p in (ROOT / "nbs").glob("*.ipynb"))
    assert sorted(n for n in notebooks if skip.search(n)) == sorted(browser_notebooks())


def _imports_between_modules(package: Path) -> dict[str, set[str]]:
    "Each module of the package and the package modules it imports anywhere in its text (inside functions too), by AST."
    import ast
    modules = {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    graph = {}
    for name in modules:
        found = set()
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level and module: found.add(module)                       # from .train import x
                elif node.level or module == "ppg_nb": found |= {a.name for a in node.names}  # from . import train
                elif module.startswith("ppg_nb."): found.add(module.removeprefix("ppg_nb."))   # from ppg_nb.train import x
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("ppg_nb.") for a in node.names if a.name.startswith("ppg_nb.")}
        graph[name] = (found & modules) - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    "One import cycle of the graph, as a path that returns to its start; None when there is none."
    state = {}
    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open": return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])): return found
        state[node] = "done"
    return next((c for start in sorted(graph) if start not in state and (c := visit(start, [start]))), None)


def test_no_import_cycle_among_modules():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]   # the detector finds one
    assert _cycle({"a": {"b"}, "b": set()}) is None
    graph = _imports_between_modules(ROOT / "ppg_nb")
    assert "model" in graph["evaluate"] and "evaluate" in graph["train"]          # it reads imports, function-level included
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def _imports_inside_functions(package: Path) -> dict[tuple[str, str], set[str]]:
    "(module, function) -> the top-level packages its body imports, for every function of the package that imports."
    found = {}
    for path in package.glob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            roots = {(n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
                     for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))
                     for a in (n.names if isinstance(n, ast.Import) else [None])}
            if roots: found[(path.stem, fn.name)] = roots
    return found


# Imported where they are used: packages that take seconds to import (peft; transformers' model classes, generation
# and Trainer), so that `ppg_nb --help`, a config error or a notebook that never loads a model answers in about 2 s, and
# optional ones (datasets; IPython outside Jupyter; vllm, which only vLLM's own environment has: ppg_nb.vllm_lora's plugin
# imports it when vLLM calls the plugin). Everything else, ppg_nb's own modules included, stands at the top.
IMPORTED_WHERE_USED = {"peft", "transformers", "datasets", "IPython", "vllm"}


def test_imports_stand_at_the_top_of_each_module():
    found = _imports_inside_functions(ROOT / "ppg_nb")
    assert {"peft"} <= found[("model", "add_lora")]                             # the detector sees function-level imports
    others = {where: roots - IMPORTED_WHERE_USED for where, roots in found.items() if roots - IMPORTED_WHERE_USED}
    assert not others, f"imports inside functions that belong at the top of their module: {others}"


def test_nbdev_doc_processor_runs_every_notebook(tmp_path):
    "nbdev's doc processor (what renders the docs) runs every notebook: imports stand in import-only cells, so the cells it "
    "executes (imports, exports, show_doc) never depend on a cell it skips."
    repo = _copy_tree(tmp_path)
    # nbdev.serve.proc_nbs, not the `nbdev_proc_nbs` command: without Quarto that command tries to install it and then runs
    # `pip install -e` on the folder it is in, which would point this environment's ppg_nb at the temporary copy
    process = "from nbdev.serve import proc_nbs; proc_nbs('nbs', n_workers=0, force=True)"
    done = subprocess.run([sys.executable, "-c", process], cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "Found cells containing imports and other code" not in done.stderr
    processed = sorted(p.name for p in (repo / "_proc").glob("*.ipynb"))
    assert processed == sorted(p.name for p in (repo / "nbs").glob("*.ipynb"))
