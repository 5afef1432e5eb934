"""Benchmark: the real-model targets of `ppg_nb train` and of the judges (not a pytest test).

1. Times `ppg_nb train --model smollm2-135m-instruct --data FILE --max-steps 2` as a user runs it (a subprocess, the model
   converted and cached beforehand, so the time is the training command's own). Target: under 5 minutes on 2 CPU cores.
2. Prints the judges' agreement with the 70B judge's labels from `nbs/results/judge/` (re-measure with the commands in
   its README.md) beside the target: AUC >= 0.70 on the unseen generator's file, with the majority class beside it.

Exits non-zero when a target is missed, and says which.

Run:  python tests/benchmarks/bench_real.py [--data FILE] [--judge-results nbs/results/judge]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ppg_nb.data import consistent_llms_dir
from ppg_nb.model import model_path

MAX_SECONDS, TARGET_AUC = 300, 0.70
ROOT = Path(__file__).resolve().parents[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = consistent_llms_dir(required=False)
    parser.add_argument("--data", type=Path, default=data and data / "full/education__gemma-2-2b-it_len_10.json",
                        help="one Consistent-LLMs file (default: the education file of $PPG_DATA/full)")
    parser.add_argument("--judge-results", type=Path, default=ROOT / "nbs/results/judge")
    args = parser.parse_args()
    if args.data is None or not args.data.is_file(): sys.exit(f"{args.data}: not found (the real data is not shipped; pass --data FILE)")
    t0 = time.time()
    folder = model_path("smollm2-135m-instruct")
    print(f"smollm2-135m-instruct: {folder} ready in {time.time() - t0:.0f} s (converted once, then cached)")
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "ppg_nb", "train", "--model", "smollm2-135m-instruct", "--data", str(args.data),
                   "--max-steps", "2", "--no-progress", "--output", f"{tmp}/run"]
        t0 = time.time()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.time() - t0
        if done.returncode: sys.exit(f"ppg_nb train failed:\n{done.stderr[-3000:]}")
        result = json.loads(Path(f"{tmp}/run/result.json").read_text())
    ok = seconds < MAX_SECONDS
    missed += [] if ok else ["train time"]
    print(f"\nppg_nb train --model smollm2-135m-instruct --data {args.data.name} --max-steps 2")
    print(f"  {'measured':>10} {'target':>10}")
    print(f"  {seconds:>9.0f}s {'<' + str(MAX_SECONDS) + 's':>10}  {'ok' if ok else 'MISSED'}   "
          f"({result['steps']} steps, peak memory {result.get('peak_memory_mb', float('nan')):.0f} MB)")
    print(f"\njudge agreement with the 70B labels ({args.judge_results})")
    print(f"  {'judge':<10} {'lines':<9} {'AUC':>6} {'target':>7} {'accuracy':>9} {'majority':>9} {'n':>5}")
    for judge in ("zero_shot", "trained"):
        for lines in ("held_out", "unseen"):
            r = json.loads((args.judge_results / f"{judge}_{lines}.json").read_text())
            target = f">={TARGET_AUC}" if (judge, lines) == ("trained", "unseen") else ""
            hit = "" if not target else ("ok" if r["auc"] >= TARGET_AUC else "MISSED")
            if hit == "MISSED": missed.append("trained judge AUC on the unseen generator")
            print(f"  {judge:<10} {lines:<9} {r['auc']:>6.3f} {target:>7} {r['accuracy']:>9.3f} {r['majority_accuracy']:>9.3f} "
                  f"{r['n_lines']:>5}  {hit}")
    if missed: sys.exit(f"\nmissed: {', '.join(missed)}")
    print("\nall targets met")


if __name__ == "__main__":
    main()
