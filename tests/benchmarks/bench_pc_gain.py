"""Benchmark: the main job's target (not a pytest test).

Runs `ppg_nb train` as a user does (a subprocess each, default settings: embedded base model, education domain, 2-step
lookahead, online) for seeds 0, 1, 2 and prints PC before, after, the gain and the wall time of each run, then the mean gain.
Target: mean gain >= 0.10, each run under 5 minutes on 2 CPU cores; the script exits non-zero when it misses either. The
embedded base model is built on the first run if the cache does not hold it (its build time is printed separately: it is
shared by every run and seed).

With `--save FILE.json` every finished run is written to FILE at once (with the command, the flags, the base model's cache
key and the versions, and the sha256 of the base model's weights), and a run already in FILE with the same seed and flags is
kept and skipped: an interrupted benchmark resumes where it stopped. A base model whose weights differ from those the saved
runs were measured on is reported. `nbs/results/main_job/` holds the committed runs that the README and `nbs/10_train.ipynb` quote.

Run:  python tests/benchmarks/bench_pc_gain.py [--seeds 0 1 2] [--save FILE.json] [extra ppg_nb train flags, e.g. --K 3]
"""
import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ppg_nb.results import versions
from ppg_nb.train import TrainConfig, embedded_base

TARGET_GAIN, MAX_SECONDS = 0.10, 300


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--save", type=Path, default=None, help="JSON file of finished runs (read, extended, resumed)")
    args, extra = parser.parse_known_args()
    c = TrainConfig()
    t0 = time.time()
    base = embedded_base(c.domain, c.base_conversations, c.base_steps, c.base_seed, progress=True)
    print(f"embedded base model {base.name}: ready in {time.time() - t0:.0f} s "
          f"(built: {json.loads((base / 'recipe.json').read_text())['seconds']} s)")
    saved = json.loads(args.save.read_text()) if args.save and args.save.exists() else {"runs": []}
    weights = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    known = saved.setdefault("base_weights_sha256", {}).setdefault(base.name, weights)
    print(f"base weights sha256 {weights[:16]}" + ("" if known == weights else
          f": NOT the base the saved runs were measured on ({known[:16]}); the numbers will differ"))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            done_before = [r for r in saved["runs"] if r["seed"] == seed and r["flags"] == extra and r["base"] == base.name]
            if done_before:
                runs.append(done_before[0]); print(f"seed {seed}: kept from {args.save}")
            else:
                out = Path(tmp) / f"seed{seed}"
                command = ["ppg_nb", "train", "--seed", str(seed), "--output", "<tmp>", "--no-progress", *extra]
                t0 = time.time()
                done = subprocess.run([sys.executable, "-m", "ppg_nb", "train", "--seed", str(seed), "--output", str(out),
                                       "--no-progress", *extra], capture_output=True, text=True)
                seconds = time.time() - t0
                if done.returncode: sys.exit(f"seed {seed} failed:\n{done.stderr[-3000:]}")
                r = json.loads((out / "result.json").read_text())
                runs.append(dict(seed=seed, flags=extra, base=base.name, pc_before=r["pc_before"], pc_after=r["pc_after"],
                                 pc_by_turn_before=r["pc_by_turn_before"], pc_by_turn_after=r["pc_by_turn_after"],
                                 seconds=round(seconds, 1), steps=r["steps"], command=" ".join(command), versions=versions()))
                if args.save:
                    saved["runs"].append(runs[-1])
                    args.save.parent.mkdir(parents=True, exist_ok=True)
                    args.save.write_text(json.dumps(saved, indent=1) + "\n")
            r = runs[-1]
            print(f"seed {seed}: PC {r['pc_before']:.3f} -> {r['pc_after']:.3f}  gain {r['pc_after'] - r['pc_before']:+.3f}  "
                  f"{r['seconds']:.0f} s ({r['steps']} steps)   {'ok' if r['seconds'] < MAX_SECONDS else 'OVER 5 MIN'}")
    gains = [r["pc_after"] - r["pc_before"] for r in runs]
    mean = sum(gains) / len(gains)
    slow = [r["seed"] for r in runs if r["seconds"] >= MAX_SECONDS]
    print(f"mean gain over seeds {args.seeds}: {mean:+.3f}   target >= +{TARGET_GAIN:.2f}: "
          f"{'ok' if mean >= TARGET_GAIN else 'MISSED'}")
    if mean < TARGET_GAIN or slow:
        sys.exit(f"MISSED: mean gain {mean:+.3f} (target >= +{TARGET_GAIN:.2f}); runs over 5 minutes: seeds {slow or 'none'}")


if __name__ == "__main__":
    main()
