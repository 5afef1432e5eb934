"""A newcomer's first hour, timed: the README's commands run as a user runs them, and every piece of their output (tqdm's
carriage-return redraws included) is stamped with the second it arrived.

For each command: wall time, peak memory (the largest resident set in the command's process tree, read with
`getrusage(RUSAGE_CHILDREN)` in a fresh wrapper process), when its first training step finished (the training bar's
`1/N`), and its longest silence (with the output on either side). By default every command starts from an empty ppg_nb
cache (`PPG_NB_CACHE` in a fresh folder), as on a new machine: a model conversion or a base build is part of its time.

    python tests/benchmarks/bench_first_hour.py                                   # every command below
    python tests/benchmarks/bench_first_hour.py --commands make-train --repo /tmp/fresh --repeat 2 --save FILE

`make-train` runs `make train` in `--repo` (a fresh clone whose `make install` has finished: the clock starts after the
install, as the target says). With `--save FILE` each finished run is written at once, with the machine and the versions;
runs already in FILE for the same command are kept and counted towards `--repeat` (an interrupted benchmark resumes).

Exits non-zero when a target misses: no silence longer than 15 s in any command; `make train` finishes its first training
step within 180 s.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ppg_nb.data import consistent_llms_dir

ROOT = Path(__file__).resolve().parents[2]
DATA = (consistent_llms_dir(required=False) or Path("$PPG_DATA")) / "full"   # the Consistent-LLMs files (not shipped)
COMMANDS = {
    "make-train": "make train",
    "real-llm": ("ppg_nb train --model smollm2-135m-instruct --data {data}/education__gemma-2-2b-it_len_10.json "
                 "--eval-data {data}/education__mistral-instruct_len_10.json --max-steps 2 --output {tmp}/real"),
    "real-llm-checkpointing": ("ppg_nb train --model smollm2-135m-instruct --data {data}/education__gemma-2-2b-it_len_10.json "
                               "--eval-data {data}/education__mistral-instruct_len_10.json --max-steps 2 --gradient-checkpointing "
                               "--output {tmp}/real"),
    "experiments-quick": "ppg_nb experiments --quick --output {tmp}/quick",
}
MAX_SILENCE_S = 15.0
FIRST_STEP_S = {"make-train": 180.0}
FIRST_STEP = re.compile(r"^PPG [^|]*\|[^|]*\|\s*1/\d+ ")
# run the command in a fresh process whose only children are the command's: RUSAGE_CHILDREN is then the command's peak
WRAPPER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1], shell=True); "
           "print('\\nPEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); sys.exit(rc)")


def timed_output(command: str, cwd: Path, env: dict) -> dict:
    "Run `command`; every line or redraw of its output with the seconds since the start; wall time, peak memory, exit code."
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, bufsize=0)
    pieces, pending = [], ""
    while chunk := os.read(proc.stdout.fileno(), 65536):
        now = time.perf_counter() - start
        parts = re.split(r"[\r\n]", pending + chunk.decode("utf-8", "replace"))
        pending = parts.pop()
        pieces += [(now, p) for p in parts if p.strip()]
    if pending.strip(): pieces.append((time.perf_counter() - start, pending))
    rc = proc.wait()
    peak = next((int(p.split()[1]) for _, p in reversed(pieces) if p.startswith("PEAK_KIB")), 0)
    return dict(rc=rc, seconds=round(time.perf_counter() - start, 1), peak_gib=round(peak / 2**20, 2),
                pieces=[(round(t, 2), p) for t, p in pieces if not p.startswith("PEAK_KIB")])


def silences(pieces: list, seconds: float, top: int = 3) -> list[dict]:
    "The `top` longest gaps between pieces of output (the start and the end count as edges), with the text on either side."
    stamps = [(0.0, "<start>")] + pieces + [(seconds, "<end>")]
    gaps = [dict(seconds=round(b[0] - a[0], 1), at=round(a[0], 1), after=a[1][-100:], before=b[1][-100:])
            for a, b in zip(stamps, stamps[1:])]
    return sorted(gaps, key=lambda g: -g["seconds"])[:top]


def summary(name: str, command: str, run: dict) -> dict:
    "What the targets and the README read from one run."
    first = next((t for t, p in run["pieces"] if FIRST_STEP.search(p)), None)
    gaps = silences(run["pieces"], run["seconds"])
    return dict(name=name, command=command, rc=run["rc"], seconds=run["seconds"], peak_gib=run["peak_gib"],
                first_step_s=first, longest_silences=gaps, last_lines=[p for _, p in run["pieces"][-4:]])


def machine() -> dict:
    "The machine and the versions a figure was measured with."
    from ppg_nb.results import versions
    from ppg_nb.model import cpu_description
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return dict(**cpu_description(), memory_gib=round(memory, 1), **versions())


def misses(result: dict) -> list[str]:
    "The targets one run misses."
    out = []
    if result["rc"] != 0: out.append(f"{result['name']}: exit code {result['rc']}")
    if result["longest_silences"][0]["seconds"] > MAX_SILENCE_S:
        g = result["longest_silences"][0]
        out.append(f"{result['name']}: {g['seconds']} s without output at {g['at']} s, after {g['after']!r}")
    limit = FIRST_STEP_S.get(result["name"])
    if limit is not None and (result["first_step_s"] is None or result["first_step_s"] > limit):
        out.append(f"{result['name']}: first training step at {result['first_step_s']} s (target {limit:.0f} s)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", nargs="+", choices=list(COMMANDS), default=list(COMMANDS))
    parser.add_argument("--repo", type=Path, default=ROOT, help="where `make train` runs (a fresh clone, installed)")
    parser.add_argument("--data", type=Path, default=DATA, help="the Consistent-LLMs files of real-llm")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command (the spread)")
    parser.add_argument("--keep-cache", action="store_true", help="use the ppg_nb cache as it is, not an empty one")
    parser.add_argument("--save", type=Path, help="JSON file: each finished run is written at once; runs in it are kept")
    args = parser.parse_args(argv)
    saved = json.loads(args.save.read_text()) if args.save and args.save.exists() else {"runs": []}
    failed = []
    for name in args.commands:
        done = [r for r in saved["runs"] if r["name"] == name]
        for _ in range(len(done), args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
                if not args.keep_cache: env["PPG_NB_CACHE"] = str(Path(tmp) / "cache")
                command = COMMANDS[name].format(data=args.data, tmp=tmp)
                print(f"{name}: {command}", flush=True)
                result = summary(name, COMMANDS[name], timed_output(command, args.repo if name == "make-train" else ROOT, env))
            result.update(machine=machine(), fresh_cache=not args.keep_cache, measured=time.strftime("%Y-%m-%d %H:%M"))
            done.append(result)
            if args.save:
                saved["runs"].append(result)
                args.save.write_text(json.dumps(saved, indent=1) + "\n")
        for r in done:
            failed += misses(r)
            g = r["longest_silences"][0]
            print(f"{name:>18}: {r['seconds']:7.1f} s, peak {r['peak_gib']:.2f} GiB, first step at {r['first_step_s']} s, "
                  f"longest silence {g['seconds']} s (at {g['at']} s, after {g['after'][-60:]!r}), exit {r['rc']}")
    for line in failed: print("MISS", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
