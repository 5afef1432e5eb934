"""How the notebooks read (not a pytest test): exported cells, their length, and how many have a check right under them.

    python tests/benchmarks/notebook_cells.py [--longest 10]

A check: the next cell is code without a `#|` directive (an exported cell or prose next does not count).
"""
import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def exported_cells(nbs: Path = ROOT / "nbs") -> list[dict]:
    "Every exported code cell: notebook, first line, length in lines (without the directive), and whether a check follows."
    out = []
    for path in sorted(nbs.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for i, cell in enumerate(cells):
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or not source.startswith("#| export"): continue
            following = cells[i + 1] if i + 1 < len(cells) else None
            checked = following is not None and following["cell_type"] == "code" and not "".join(following["source"]).startswith("#|")
            out.append(dict(notebook=path.name, first=source.split("\n")[1][:70], lines=len(source.split("\n")) - 1,
                            checked=checked))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--longest", type=int, default=10)
    args = parser.parse_args()
    cells = exported_cells()
    lines = [c["lines"] for c in cells]
    print(f"{len(cells)} exported cells: mean {statistics.mean(lines):.1f} lines, median {statistics.median(lines):g}, "
          f"{sum(n < 25 for n in lines) / len(cells):.0%} under 25 lines, {sum(c['checked'] for c in cells) / len(cells):.0%} "
          f"followed by a check")
    for c in sorted(cells, key=lambda c: -c["lines"])[:args.longest]:
        print(f"  {c['lines']:4d}  {c['notebook']}: {c['first']}")


if __name__ == "__main__":
    main()
