"""Benchmark: the per-step cost of K='auto' in the trainer against a fixed-K step (not a pytest test).

Trains the same run (embedded model by default; offline on the education domain's logged data, or online as the
experiments train) with `K=2` and with `K='auto'`, alternating the two `--repeats` times so that a busy machine slows both
alike, and prints the median step time of each (the first step of every run is left out: it warms up) and their ratio.
Target: auto's step under 1.20 x the fixed-K step; exits non-zero when it misses.

Run:  python tests/benchmarks/bench_auto_k_train.py [--mode offline|online] [--steps 8] [--repeats 2] [--model embedded] [--batch-size 16]
"""
import argparse
import statistics
import sys
import tempfile

from ppg_nb.train import train

TARGET = 1.20


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("offline", "online"), default="offline")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--data", default=None, help="logged data for another model (default: the synthetic domain's)")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    times = {2: [], "auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for K in times:
                result = train(model=args.model, data=args.data, mode=args.mode, K=K, max_steps=args.steps, batch_size=args.batch_size,
                               eval_personas=0, progress=False, output=f"{tmp}/{K}-{r}", seed=r)
                times[K] += [h["time/step_s"] for h in result.history if "time/step_s" in h][1:]
    fixed, auto = statistics.median(times[2]), statistics.median(times["auto"])
    ratio = auto / fixed
    print(f"mode {args.mode}, {args.steps} steps x {args.repeats} repeats")
    print(f"{'':<24} {'median step':>12} {'steps':>6}")
    print(f"{'K=2':<24} {fixed:>11.3f}s {len(times[2]):>6}")
    print(f"{'K=auto':<24} {auto:>11.3f}s {len(times['auto']):>6}")
    print(f"ratio auto / fixed: {ratio:.3f} (target < {TARGET})  {'ok' if ratio < TARGET else 'MISSED'}")
    if ratio >= TARGET: sys.exit(1)


if __name__ == "__main__":
    main()
