"""Benchmark: how fast a newcomer's mistakes are refused (not a pytest test).

Runs every mistake of tests/test_newcomer.py as the user does (`python -m ppg_nb ...` in a subprocess, in a folder prepared
the same way), prints the wall time of each and exits non-zero when one takes 5 s or more, fails, or writes a file.
Run:  python tests/benchmarks/bench_newcomer.py
"""
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

LIMIT_S = 5.0
spec = importlib.util.spec_from_file_location("newcomer", Path(__file__).parents[1] / "test_newcomer.py")
newcomer = importlib.util.module_from_spec(spec); spec.loader.exec_module(newcomer)


def main():
    slow, wrong = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = newcomer.prepare(Path(tmp) / "newcomer")
        env = {**os.environ, "PPG_NB_CACHE": str(Path(tmp) / "cache"), "PYTHONWARNINGS": "ignore"}
        for command, flag, phrase in newcomer.MISTAKES:
            before, start = newcomer.snapshot(folder), time.perf_counter()
            done = newcomer.run_mistake(command, folder, env)
            seconds = time.perf_counter() - start
            line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
            ok = done.returncode != 0 and flag in line and phrase in line and newcomer.snapshot(folder) == before
            if not ok: wrong.append(command)
            if seconds >= LIMIT_S: slow.append(command)
            print(f"{seconds:5.2f} s  {'ok ' if ok else 'BAD'}  ppg_nb {command.format(d='DIR')}\n           {line}")
    print(f"{len(newcomer.MISTAKES)} mistakes; slowest limit {LIMIT_S} s: {len(slow)} over, {len(wrong)} not refused as they should be")
    if slow or wrong: sys.exit(f"MISSED: slow {slow}, wrong {wrong}")


if __name__ == "__main__":
    main()
