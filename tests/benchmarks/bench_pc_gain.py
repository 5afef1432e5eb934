"""Benchmark: the main job's target (not a pytest test).

Runs `ppg_nb train` as a user does (a subprocess each, default settings: embedded base model, education domain, 2-step
lookahead) for seeds 0, 1, 2 and prints PC before, after, the gain and the wall time of each run, then the mean gain.
Target: mean gain >= 0.10, each run under 5 minutes on 2 CPU cores. The embedded base model is built on the first run if the
cache does not hold it (its build time is printed separately: it is shared by every run and seed).

Run:  python tests/benchmarks/bench_pc_gain.py [--seeds 0 1 2] [extra ppg_nb train flags, e.g. --K 3]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ppg_nb.train import TrainConfig, embedded_base


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args, extra = parser.parse_known_args()
    c = TrainConfig()
    t0 = time.time()
    base = embedded_base(c.domain, c.base_conversations, c.base_steps, c.base_seed, progress=True)
    print(f"embedded base model {base.name}: ready in {time.time() - t0:.0f} s "
          f"(built: {json.loads((base / 'recipe.json').read_text())['seconds']} s)")
    gains = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = Path(tmp) / f"seed{seed}"
            t0 = time.time()
            done = subprocess.run([sys.executable, "-m", "ppg_nb", "train", "--seed", str(seed), "--output", str(out),
                                   "--no-progress", *extra], capture_output=True, text=True)
            seconds = time.time() - t0
            if done.returncode: sys.exit(f"seed {seed} failed:\n{done.stderr[-3000:]}")
            r = json.loads((out / "result.json").read_text())
            gains.append(r["pc_after"] - r["pc_before"])
            print(f"seed {seed}: PC {r['pc_before']:.3f} -> {r['pc_after']:.3f}  gain {gains[-1]:+.3f}  {seconds:.0f} s "
                  f"({r['steps']} steps, {r['tokens_per_s']:.0f} tok/s)   {'ok' if seconds < 300 else 'OVER 5 MIN'}")
    mean = sum(gains) / len(gains)
    print(f"mean gain over seeds {args.seeds}: {mean:+.3f}   target >= +0.10: {'ok' if mean >= 0.10 else 'MISSED'}")


if __name__ == "__main__":
    main()
