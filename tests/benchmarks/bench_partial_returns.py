"""Benchmark: `partial_returns` on 100,000 trajectories x 64 steps, for each policy class.

Prints, side by side, our time, a straightforward per-trajectory Python loop (timed on a slice and scaled to the whole
batch), and one `torch.cumsum` over the same tensor (the floor). Targets: speed-up over the loop >= 50x, and time
within 3x of the cumsum.   Run: python tests/benchmarks/bench_partial_returns.py [--batch 100000] [--steps 64]
"""
import argparse
import sys
import time

import torch

from ppg_nb.core import partial_returns, reward_indices, credit_matrix

CLASSES = [("full", {}), ("greedy", {}), ("kstep", {"K": 4}), ("kstep", {"K": 16}), ("segment", {"length": 8}),
           ("segment", {"boundaries": [10, 30, 50]})]


def best_times(fns, repeats: int = 30) -> list[float]:
    "Best wall time of each function in seconds; runs are interleaved so that every function sees the same machine load."
    for fn in fns: fn(); fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter(); fn(); best[k] = min(best[k], time.perf_counter() - start)
    return best


def python_loop(rewards: torch.Tensor, R: list[list[int]]) -> list[list[float]]:
    "The straightforward implementation: for each trajectory, for each step, sum its credited rewards."
    returns = []
    for trajectory in rewards.tolist():
        returns.append([sum(trajectory[i] for i in R_t) for R_t in R])
    return returns


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--loop-slice", type=int, default=2_000, help="trajectories timed for the Python loop")
    args = parser.parse_args()
    torch.manual_seed(0)
    rewards = torch.rand(args.batch, args.steps)
    print(f"{args.batch} x {args.steps} float32 on {torch.get_num_threads()} threads\n")
    missed = []
    print(f"{'policy':<38}{'ours ms':>9}{'cumsum ms':>11}{'loop ms':>10}{'vs loop':>9}{'vs cumsum':>11}   targets: >=50x, <=3x")
    for policy, params in CLASSES:
        ours, floor = best_times([lambda: partial_returns(rewards, policy, **params), lambda: torch.cumsum(rewards, -1)])
        R = reward_indices(credit_matrix(args.steps, policy, **params))
        sliced = rewards[:args.loop_slice]
        start = time.perf_counter(); expected = python_loop(sliced, R); loop = time.perf_counter() - start
        loop *= args.batch / len(sliced)
        torch.testing.assert_close(partial_returns(sliced, policy, **params), torch.tensor(expected), rtol=1e-5, atol=1e-4)
        label = f"{policy} {params}" if params else policy
        verdict = "ok" if loop / ours >= 50 and ours / floor <= 3 else "MISSED"
        if verdict == "MISSED": missed.append(label)
        print(f"{label:<38}{ours * 1e3:>9.2f}{floor * 1e3:>11.2f}{loop * 1e3:>10.0f}{loop / ours:>8.0f}x{ours / floor:>10.2f}x   {verdict}")
    if missed: sys.exit(f"MISSED the targets on: {', '.join(missed)}")


if __name__ == "__main__":
    main()
