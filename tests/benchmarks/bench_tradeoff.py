"""Benchmark of `ppg_nb.theory.tradeoff_grid` (not a pytest test).

Run:  python tests/benchmarks/bench_tradeoff.py [--repeats 3] [--threads 2]

Times the issue's grid -- n = 6 steps, 3 actions, 4 values of N x 5 values of K x 5 seeds, 50 steps each -- and compares it
with the cost of the exact enumeration alone: the same 100 runs x 50 steps with the exact K-step gradient (a sum over all
3**6 = 729 sequences per step) in place of the sampled estimate, plus the exact value of every learned policy. Budget: under
a minute on 2 cores; about a second expected.
"""
import argparse
import sys
import platform
import time

import torch

from ppg_nb.theory import ExactEnv, exact_ascent, tradeoff_grid

NS, KS, SEEDS, STEPS = (4, 16, 64, 256), (1, 2, 3, 4, 6), range(5), 50


def best_of(fn, repeats: int) -> float:
    "Smallest wall time of `repeats` calls of `fn`."
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads outside the grid (default: torch's)")
    args = parser.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    env = ExactEnv(n=6, n_actions=3)
    runs = len(NS) * len(KS) * len(SEEDS)
    grid = best_of(lambda: tradeoff_grid(env, Ns=NS, Ks=KS, seeds=SEEDS, steps=STEPS), args.repeats)
    # exact enumeration alone: exact_ascent does len(KS) runs of STEPS exact gradients; the grid has runs / len(KS) times more
    ascent = best_of(lambda: exact_ascent(env, Ks=KS, steps=STEPS), args.repeats) * runs / len(KS)
    thetas = torch.stack([env.random_theta(s) for s in range(runs)])
    values = best_of(lambda: env.exact_value(thetas), args.repeats)
    exact = ascent + values
    print(f"torch {torch.__version__}, python {platform.python_version()}, {torch.get_num_threads()} torch threads "
          f"(the grid runs on 1 thread)")
    print(f"grid: {len(NS)} N x {len(KS)} K x {len(SEEDS)} seeds = {runs} runs x {STEPS} steps, n=6, 3 actions")
    print(f"  grid time (sampled estimate, best of {args.repeats}):          {grid:7.3f} s   (budget 60 s)")
    print(f"  exact enumeration alone (exact gradients, same runs/steps): {exact:7.3f} s   "
          f"({ascent:.3f} s ascent + {values:.4f} s final values)")
    print(f"  ratio grid / exact enumeration:                            {grid / exact:7.2f}")
    if grid > 60: sys.exit(f"MISSED: the grid took {grid:.1f} s, over its 60 s budget")


if __name__ == "__main__":
    main()
