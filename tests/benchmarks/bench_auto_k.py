"""Benchmark of `K="auto"` in the theory lab on settings it was not tuned on (not a pytest test).

Draws random lab settings (n, A, horizon, context, payoff seed) the rule's design never looked at and runs
`tradeoff_grid(env, Ks=[1, ..., n, "auto"])` on each (20 seeds) for the rules of `ppg_nb.autok` named by `--rules` (default:
`budget` and `step`, the first rule; `tested`: budget with a significance test). With `--batch B` (the default, 16) each N is a run's budget: N trajectories in N // B steps of
B trajectories, as the trainer runs; `--batch 0` is the first lab (N trajectories at each of 50 steps). It prints, per setting
and pooled over settings, side by side (values scaled to (J - J(theta0)) / (J* - J(theta0)) so settings pool):

- the mean value of auto (each rule) against every fixed K as one policy over settings, averaged over N and seeds;
  target: auto >= the best single fixed K;
- auto's regret to the per-N oracle K (the fixed K with the best mean at that N) against the gap between the oracle and
  the worst K; target: regret <= gap / 4;
- the Spearman correlation of auto's mean chosen K with N, on the settings whose oracle K grows with N (Spearman of the
  oracle K with N > 0); target: positive on at least 80% of them.

Exits non-zero when the `--rule` (default: the first of `--rules`) misses a pooled target. `--save FILE.json` writes every row.

Run:  python tests/benchmarks/bench_auto_k.py [--settings 12] [--seeds 20] [--batch 16] [--Ns 64 160 384 768]
          [--first-seed 9100] [--rules budget step] [--rule budget] [--save nbs/results/autok/budget.json]
The first rule's benchmark (nbs/results/autok/bench.json): --batch 0 --Ns 4 16 64 256 --first-seed 5000 --rule step, with
the first rule's memory 0.9 (its default) and the target gap / 3.
"""
import argparse
import json
import random
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ppg_nb.experiments import versions
from ppg_nb.theory import ExactEnv, tradeoff_grid, tradeoff_table

RULES = ("budget", "step", "tested")


def draw_settings(count: int, first_seed: int = 9100) -> list[dict]:
    "Random lab settings: n in 4..7, A in 2..4, horizon in 2..n-1, either context; payoff seeds from `first_seed` (the design saw 0-121, 1000-1023 and 5000-5011)."
    FIRST_SEED, rng = first_seed, random.Random(first_seed)
    out = []
    for i in range(count):
        n = rng.choice([4, 5, 6, 7]); A = rng.choice([2, 3, 4] if n <= 5 else [2, 3])
        out.append(dict(n=n, n_actions=A, horizon=rng.randint(2, n - 1), context=rng.choice(["none", "none", "previous"]),
                        seed=FIRST_SEED + i))
    return out


def spearman(values) -> float:
    "Spearman correlation of `values` with their position (ties: average ranks); 0 for a constant sequence."
    r = pd.Series(values, dtype=float).rank()
    return 0.0 if r.std() == 0 else float(r.corr(pd.Series(range(len(r)), dtype=float)))


def measure(kw: dict, seeds: int, grid: dict, rule: str, memory: float | None) -> dict:
    "One setting, one rule: the fixed K's and auto's scaled means per N, the oracle K, the K auto chose."
    env = ExactEnv(**kw)
    df = tradeoff_grid(env, Ks=[*range(1, env.n + 1), "auto"], seeds=range(seeds), rule=rule, memory=memory, **grid)
    start, top = df.attrs["start"], env.optimum()
    means = (tradeoff_table(df) - start) / (top - start)                 # scaled: 0 = uniform start, 1 = J*
    fixed = means.drop(columns="auto")
    chosen = df[df.K == "auto"].groupby("N").chosen.mean()
    return dict(setting=kw, rule=rule, auto=float(means["auto"].mean()), auto_by_N=means["auto"].round(4).tolist(),
                best_fixed=float(fixed.mean().max()), best_fixed_K=int(fixed.mean().idxmax()),
                regret=float((fixed.max(axis=1) - means["auto"]).mean()), gap=float((fixed.max(axis=1) - fixed.min(axis=1)).mean()),
                oracle_K=fixed.idxmax(axis=1).tolist(), chosen=chosen.round(2).tolist(), chosen_spearman=spearman(chosen.tolist()),
                oracle_spearman=spearman(fixed.idxmax(axis=1).tolist()), fixed_means=fixed.mean().round(4).tolist())


def pool(rows: list[dict]) -> dict:
    "The pooled figures of one rule's rows: auto's mean, every fixed K as one policy over settings, regret, gap, growth."
    m = len(rows)
    fixed = {K: sum(r["fixed_means"][min(K, r["setting"]["n"]) - 1] for r in rows) / m for K in range(1, 8)}  # K > n: full planning
    growing = [r for r in rows if r["oracle_spearman"] > 0]
    return dict(auto=sum(r["auto"] for r in rows) / m, fixed=fixed, best_K=max(fixed, key=fixed.get),
                regret=sum(r["regret"] for r in rows) / m, gap=sum(r["gap"] for r in rows) / m,
                wins=sum(r["auto"] >= r["best_fixed"] for r in rows), oracle_grows=len(growing),
                chosen_grows=sum(r["chosen_spearman"] > 0 for r in growing),
                chosen_grows_all=sum(r["chosen_spearman"] > 0 for r in rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="trajectories per step; N is the run's budget (0: N per step, 50 steps)")
    parser.add_argument("--Ns", type=int, nargs="+", default=[64, 160, 384, 768])
    parser.add_argument("--first-seed", type=int, default=9100, help="payoff seed of the first setting (and of their draw)")
    parser.add_argument("--rules", choices=RULES, nargs="+", default=["budget", "step"], help="the rules run side by side on the same settings")
    parser.add_argument("--rule", choices=RULES, default=None, help="the rule the exit code judges (default: the first of --rules; all are printed)")
    parser.add_argument("--memory", type=float, default=None, help="AutoK memory (default: each rule's)")
    parser.add_argument("--share", type=float, default=4, help="target: regret <= gap / share (4; the first benchmark used 3)")
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    RUN = list(dict.fromkeys(args.rules)); args.rule = args.rule or RUN[0]
    if args.rule not in RUN: parser.error(f"--rule {args.rule} is not among --rules {RUN}")
    torch.set_num_threads(1)
    grid = dict(Ns=tuple(args.Ns)) | (dict(batch=args.batch) if args.batch else {})
    rows, t0 = {rule: [] for rule in RUN}, time.time()
    cols = " ".join(f"{r:>7}" for r in RUN)
    print(f"{'setting':<40} {'best K':>9} {cols} {'regret ' + '/'.join(r[0] for r in RUN):>14} {'gap/' + format(args.share, 'g'):>6}  oracle K by N | chosen: " + " / ".join(RUN))
    for kw in draw_settings(args.settings, args.first_seed):
        for rule in RUN: rows[rule].append(measure(kw, args.seeds, grid, rule, args.memory))
        b = rows[args.rule][-1]; last = [rows[r][-1] for r in RUN]
        name = f"n={kw['n']} A={kw['n_actions']} h={kw['horizon']} {kw['context']} seed={kw['seed']}"
        print(f"{name:<40} {b['best_fixed']:>6.3f} K{b['best_fixed_K']} " + " ".join(f"{x['auto']:>7.3f}" for x in last) + " "
              + f"{'/'.join(format(x['regret'], '.3f') for x in last):>14} {b['gap'] / args.share:>6.3f}  {b['oracle_K']} | "
              + " / ".join(str(x["chosen"]) for x in last), flush=True)
    pooled = {rule: pool(rows[rule]) for rule in RUN}
    p = pooled[args.rule]
    print(f"\npooled over {args.settings} settings ({time.time() - t0:.0f} s), values scaled to [J(theta0), J*] = [0, 1]:")
    print("  fixed K as one policy over settings (K > n: full planning): " + ", ".join(f"K={K} {v:.4f}" for K, v in p["fixed"].items()))
    print(f"  {'':<44} " + " ".join(f"{r:>9}" for r in RUN) + f" {'target':>10}")
    best = p["fixed"][p["best_K"]]
    print(f"  {'auto mean value':<44} " + " ".join(f"{pooled[r]['auto']:>9.4f}" for r in RUN) + f" {'>=' + format(best, '.4f'):>10}  (best fixed K={p['best_K']})")
    print(f"  {'regret to the per-N oracle K / gap':<44} " + " ".join(f"{pooled[r]['regret'] / p['gap']:>9.3f}" for r in RUN)
          + f" {'<=' + format(1 / args.share, '.3f'):>10}  (gap {p['gap']:.4f})")
    print(f"  {'chosen K grows with N, where the oracle does':<44} " + " ".join(f"{pooled[r]['chosen_grows']:>4} of {p['oracle_grows']}" for r in RUN) + f" {'>= 80%':>10}")
    print(f"  {'chosen K grows with N, all settings':<44} " + " ".join(f"{pooled[r]['chosen_grows_all']:>3} of {args.settings}" for r in RUN))
    print(f"  {'auto >= the setting best fixed K':<44} " + " ".join(f"{pooled[r]['wins']:>3} of {args.settings}" for r in RUN))
    ok = {"auto below the best fixed K": p["auto"] >= best, "regret above gap / " + format(args.share, "g"): p["regret"] <= p["gap"] / args.share,
          "chosen K does not grow where the oracle does": p["oracle_grows"] == 0 or p["chosen_grows"] >= 0.8 * p["oracle_grows"]}
    print(f"  rule {args.rule}: " + ", ".join(f"{'MISSED: ' if not v else 'ok: not '}{k}" for k, v in ok.items()))
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(dict(command="python tests/benchmarks/bench_auto_k.py " + " ".join(sys.argv[1:]), versions=versions(),
                                             grid=grid, share=args.share, rules=RUN, judged=args.rule, rows=rows, pooled=pooled), indent=1))
    if not all(ok.values()): raise SystemExit("missed: " + ", ".join(k for k, v in ok.items() if not v))


if __name__ == "__main__":
    main()
