"""Benchmark: rollouts that keep the KV cache from turn to turn (`LineSampler`) against reading every prompt from its
start at every turn (`sample_lines`), not a pytest test.

Rolls the embedded base model out on held-out personas of a synthetic domain at each `--turns`, with and without
`reuse_cache`, alternating the two `--repeats` times so that a busy machine slows both alike, and prints the median
seconds of each and their ratio. Both rollouts are greedy, so they must write the same token ids: the script checks it.
Target: at the longest conversation, the cached rollout at least `TARGET` times faster; exits non-zero when it misses or
when the two rollouts differ.

Run:  python tests/benchmarks/bench_rollout_cache.py [--turns 10 30 60] [--personas 32] [--repeats 2] [--domain education]
"""
import argparse
import statistics
import sys
import time

import torch

from ppg_nb.rollout import TokenAgent, rollout
from ppg_nb.model import load_model
from ppg_nb.personas import sample_personas
from ppg_nb.train import TrainConfig, embedded_base

TARGET = 3.0


def timed_rollout(model, tok, domain, personas, n_turns, reuse_cache):
    "Seconds of one greedy rollout, and its examples' token ids."
    agent = TokenAgent(model, tok, temperature=0, max_new_tokens=48, reuse_cache=reuse_cache)
    start = time.perf_counter()
    _, examples = rollout(model, tok, domain, personas, n_turns, seed=0, agent=agent)
    return time.perf_counter() - start, [ex.input_ids for ex in examples]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, nargs="+", default=[10, 30, 60])
    parser.add_argument("--personas", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--domain", default="education")
    args = parser.parse_args()
    c = TrainConfig(domain=args.domain)
    model, tok = load_model(str(embedded_base(c.domain, c.base_conversations, c.base_steps, c.base_seed)), device="cpu")
    personas = sample_personas(args.domain, args.personas, seed=c.eval_seed)
    print(f"{args.domain}: {args.personas} conversations, greedy, median of {args.repeats}")
    print(f"{'turns':>6} {'every prompt':>13} {'cache kept':>11} {'ratio':>7} {'same ids':>9}")
    ok = True
    for n_turns in args.turns:
        seconds, same = {True: [], False: []}, True
        for _ in range(args.repeats):
            ids = {}
            for reuse in (False, True):
                t, ids[reuse] = timed_rollout(model, tok, args.domain, personas, n_turns, reuse)
                seconds[reuse].append(t)
            same &= ids[True] == ids[False]
        plain, cached = statistics.median(seconds[False]), statistics.median(seconds[True])
        print(f"{n_turns:>6} {plain:>12.2f}s {cached:>10.2f}s {plain / cached:>6.2f}x {str(same):>9}")
        ok &= same
    ratio = plain / cached
    print(f"at {args.turns[-1]} turns: {ratio:.2f}x faster (target >= {TARGET}); identical ids: {ok}  "
          f"{'ok' if ok and ratio >= TARGET else 'MISSED'}")
    if not ok or ratio < TARGET: sys.exit(1)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
