"""Benchmark of `K="auto"` in the theory lab on settings it was not tuned on (not a pytest test).

Draws random lab settings (n, A, horizon, context, payoff seed) the rule's design never looked at, runs
`tradeoff_grid(env, Ks=[1, ..., n, "auto"])` on each (20 seeds, N in 4, 16, 64, 256) and prints, per setting and pooled
over settings, side by side:

- the mean value of `auto` against the best fixed K's, averaged over N and seeds (values scaled to (J - J(theta0)) /
  (J* - J(theta0)) so settings pool); target: auto >= every fixed K;
- auto's regret to the per-N oracle K (the fixed K with the best mean at that N) against the gap between the oracle and
  the worst K; target: regret <= gap / 3.

Exits non-zero when the pooled figures miss either target. `--save FILE.json` writes every row (committed in
`nbs/results/autok/bench.json`, which `nbs/02c_autok.ipynb` reads).

Run:  python tests/benchmarks/bench_auto_k.py [--settings 12] [--seeds 20] [--memory 0.9] [--save FILE.json]
"""
import argparse
import json
import random
import time
from pathlib import Path

import torch

from ppg_nb.experiments import versions
from ppg_nb.theory import ExactEnv, tradeoff_grid, tradeoff_table

FIRST_SEED = 5000  # payoff seeds of the settings: the design looked at 0-121 and 1000-1023 only


def draw_settings(count: int, seed: int = 5000) -> list[dict]:
    "Random lab settings: n in 4..7, A in 2..4, horizon in 2..n-1, either context."
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = rng.choice([4, 5, 6, 7]); A = rng.choice([2, 3, 4] if n <= 5 else [2, 3])
        out.append(dict(n=n, n_actions=A, horizon=rng.randint(2, n - 1), context=rng.choice(["none", "none", "previous"]),
                        seed=FIRST_SEED + i))
    return out


def measure(kw: dict, seeds: int, memory: float) -> dict:
    env = ExactEnv(**kw)
    df = tradeoff_grid(env, Ks=[*range(1, env.n + 1), "auto"], seeds=range(seeds), memory=memory)
    start, top = df.attrs["start"], env.optimum()
    means = (tradeoff_table(df) - start) / (top - start)                 # scaled: 0 = uniform start, 1 = J*
    fixed = means.drop(columns="auto")
    return dict(setting=kw, auto=float(means["auto"].mean()), best_fixed=float(fixed.mean().max()),
                best_fixed_K=int(fixed.mean().idxmax()), regret=float((fixed.max(axis=1) - means["auto"]).mean()),
                gap=float((fixed.max(axis=1) - fixed.min(axis=1)).mean()),
                oracle_K=fixed.idxmax(axis=1).tolist(), chosen=df[df.K == "auto"].groupby("N").chosen.mean().round(2).tolist(),
                fixed_means=fixed.mean().round(4).tolist())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--memory", type=float, default=0.9, help="AutoK memory (default 0.9, the rule's default)")
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, t0 = [], time.time()
    print(f"{'setting':<44} {'auto':>6} {'best K':>7} {'K':>2} {'regret':>7} {'gap/3':>6}  oracle K by N / auto chose")
    for kw in draw_settings(args.settings):
        r = measure(kw, args.seeds, args.memory); rows.append(r)
        name = f"n={kw['n']} A={kw['n_actions']} h={kw['horizon']} {kw['context']} seed={kw['seed']}"
        print(f"{name:<44} {r['auto']:>6.3f} {r['best_fixed']:>7.3f} {r['best_fixed_K']:>2} {r['regret']:>7.3f} {r['gap'] / 3:>6.3f}"
              f"  {r['oracle_K']} / {r['chosen']}", flush=True)
    pooled_auto = sum(r["auto"] for r in rows) / len(rows)
    # every fixed K as a policy over settings: K = j for j <= n, full planning (K = n) where j > n
    pooled_fixed = {K: sum(r["fixed_means"][min(K, r["setting"]["n"]) - 1] for r in rows) / len(rows) for K in range(1, 8)}
    regret, gap = sum(r["regret"] for r in rows) / len(rows), sum(r["gap"] for r in rows) / len(rows)
    wins = sum(r["auto"] >= r["best_fixed"] for r in rows)
    print(f"\npooled over {len(rows)} settings ({time.time() - t0:.0f} s), values scaled to [J(theta0), J*] = [0, 1]:")
    print(f"  {'':<34} {'measured':>9} {'target':>9}")
    best_K = max(pooled_fixed, key=pooled_fixed.get)
    ok1, ok2 = pooled_auto >= pooled_fixed[best_K], regret <= gap / 3
    print(f"  {'auto mean value':<34} {pooled_auto:>9.4f} {'>=' + format(pooled_fixed[best_K], '.4f'):>9}  (best fixed K={best_K}) "
          f"{'ok' if ok1 else 'MISSED'}")
    print(f"  {'regret to the per-N oracle K':<34} {regret:>9.4f} {'<=' + format(gap / 3, '.4f'):>9}  (gap {gap:.4f}, ratio "
          f"{regret / gap:.2f}) {'ok' if ok2 else 'MISSED'}")
    print(f"  auto >= the setting's best fixed K in {wins} of {len(rows)} settings")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(dict(command=f"python tests/benchmarks/bench_auto_k.py --settings {args.settings} --seeds "
                                                     f"{args.seeds} --memory {args.memory} --save {args.save}", versions=versions(), rows=rows,
                                             pooled=dict(auto=pooled_auto, fixed=pooled_fixed, regret=regret, gap=gap, wins=wins)),
                                        indent=1))
    if not (ok1 and ok2): raise SystemExit("missed: " + ", ".join(m for m, ok in (("auto below a fixed K", ok1), ("regret above gap/3", ok2)) if not ok))


if __name__ == "__main__":
    main()
