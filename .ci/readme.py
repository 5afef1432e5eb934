"""Generate README.md from nbs/index.ipynb (Quarto-free stand-in for `nbdev_readme`).

Markdown cells are copied; code cells become ```python blocks with nbdev directives (`#| ...`) removed; cells marked
`#| hide` are left out; image links relative to nbs/ are rewritten relative to the repo root. Outputs are never copied
(notebooks are stored without them). `--check` exits 1 when README.md differs from what the notebook gives.
"""
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "<!-- Generated from nbs/index.ipynb by `python .ci/readme.py`: edit the notebook, not this file. -->\n\n"


def render(index: Path = ROOT / "nbs" / "index.ipynb") -> str:
    notebook = nbformat.read(index, as_version=4)
    parts = []
    for cell in notebook.cells:
        lines = cell.source.splitlines()
        directives = [line for line in lines if line.startswith("#|")]
        if any(re.match(r"#\|\s*hide\b", d) for d in directives): continue
        body = "\n".join(line for line in lines if not line.startswith("#|")).strip("\n")
        if not body.strip(): continue
        if cell.cell_type == "markdown":
            body = re.sub(r"\]\((?!https?:|/|#)([^)]+)\)", r"](nbs/\1)", body)
            parts.append(body)
        elif cell.cell_type == "code":
            parts.append(f"```python\n{body}\n```")
    return NOTICE + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    readme, text = ROOT / "README.md", render()
    if "--check" in sys.argv[1:]:
        if not readme.exists() or readme.read_text(encoding="utf-8") != text:
            sys.exit("README.md disagrees with nbs/index.ipynb: run `python .ci/readme.py` and commit README.md")
        print("README.md matches nbs/index.ipynb")
    else:
        readme.write_text(text, encoding="utf-8")
        print(f"wrote {readme}")
