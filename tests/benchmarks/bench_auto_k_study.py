"""The sample-size study of `K="auto"` on fresh training seeds (not a pytest test): resumable, prints the issue's targets.

Runs the rows of the experiments' scaling study (`ppg_nb.experiments`, FULL's settings: 10 turns, N in 128, 320, 768,
K in 1-5 and 10 = full planning, and `auto` = `TrainConfig(K="auto")` with the trainer's default rule) for the given
domains and training seeds, one `train` run per row, and appends each finished row to `OUTPUT/scaling.csv` (the
experiments' format; rows already there are skipped, a run with checkpoints is resumed). Several processes may share
the folder when they run disjoint rows (`--only fixed` / `--only auto`). Rows run N by N (all seeds of the smallest N
first), so a partial folder holds complete comparisons.

Then prints, per domain and N, auto's mean PC beside the best fixed K's (`ppg_nb.experiments.auto_vs_fixed`) and the
mean K auto chose, and the targets:

- auto within one standard error of the best fixed K at every N, on at least two of the domains;
- auto's mean chosen K non-decreasing in N on every domain.

Exits 1 when a target is missed on the rows there, 2 when rows are missing (the targets are printed on what is there).

Run:  OMP_NUM_THREADS=1 nice -n 5 python tests/benchmarks/bench_auto_k_study.py --output nbs/results/autok/study \
          --domains chatting --seeds 10 11 12 [--only fixed|auto] [--report]
The first rule on the same seeds (its own folder; the report takes the fixed-K rows of the main one):
      ... --output nbs/results/autok/study_step --auto-rule step --only auto [--Ns 128 320] [--report --fixed-from nbs/results/autok/study]
"""
import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from ppg_nb.autok import AUTO
from ppg_nb.experiments import (FULL, ResultsCSV, auto_vs_fixed, open_output, run_config, run_name, scaling_method)
from ppg_nb.train import train


def spec_of(domains, seeds, Ns=None, auto_rule=None):
    "FULL's scaling settings on these domains and seeds (mode 'autok': its own results folder); another auto rule: its own folder."
    return dataclasses.replace(FULL, name="autok", domains=tuple(domains), seeds=tuple(seeds), length_domains=tuple(domains),
                               Ns=tuple(Ns or FULL.Ns), train_overrides={} if auto_rule is None else {"auto_rule": auto_rule})


def rows_of(spec, only: str):
    "(domain, method, K, N, seed) of every row, N by N."
    Ks = [K for K in spec.scaling_Ks if only != "auto"] + ([AUTO] if only != "fixed" else [])
    return [(d, AUTO if K == AUTO else scaling_method(K, spec.n_turns), K, N, s)
            for N in spec.Ns for s in spec.seeds for d in spec.domains for K in Ks]


def run_row(spec, out: Path, domain, method, N, seed) -> dict:
    "Train one row's run (or resume it, or read its result); its result.json."
    run_dir = out / "runs" / run_name(domain, method, N, spec.n_turns, seed)
    config = run_config(spec, domain, method, N, spec.n_turns, seed, output=str(run_dir))
    if not (run_dir / "result.json").exists():
        if list((run_dir / "checkpoints").glob("checkpoint_*[0-9]")): train(config, resume_from=str(run_dir))
        else:
            if run_dir.exists(): shutil.rmtree(run_dir)
            train(config)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return json.loads((run_dir / "result.json").read_text())


def report(out: Path, spec, fixed_from: Path | None = None) -> int:
    f = ResultsCSV(out / "scaling.csv", "scaling")
    df = f.frame()
    if fixed_from is not None:                                      # the fixed-K rows of another folder (same seeds and settings)
        other = ResultsCSV(fixed_from / "scaling.csv", "scaling")
        df = pd.concat([other.frame().query("K != 'auto'"), df[df.K == AUTO]], ignore_index=True)
        f.done |= {k for k in other.done if k[2] != AUTO}
    df = df[df.domain.isin(spec.domains) & df.seed.isin(spec.seeds)]
    planned = rows_of(spec, "all")
    missing = [r for r in planned if f.key(dict(domain=r[0], N=r[3], K=r[2], seed=r[4])) not in f.done]
    pd.set_option("display.width", 200)
    if df.empty: print("no rows yet"); return 2
    fixed = df[df.K != AUTO].astype({"K": int})
    print("mean PC per (domain, N) and K over the seeds there (standard error in brackets):")
    for domain, g in fixed.groupby("domain", sort=False):
        m = g.pivot_table(index="N", columns="K", values="pc", aggfunc="mean")
        se = g.pivot_table(index="N", columns="K", values="pc", aggfunc="sem")
        a = df[(df.domain == domain) & (df.K == AUTO)].groupby("N").pc.agg(["mean", "sem", "count"])
        print(f"  {domain}"); print((m.round(3).astype(str) + " (" + se.round(3).astype(str) + ")").join(
            (a["mean"].round(3).astype(str) + " (" + a["sem"].round(3).astype(str) + ")").rename("auto")).to_string())
    avf = auto_vs_fixed(df)
    ok_within, ok_grow = True, True
    if not avf.empty:
        print("\nauto against the best fixed K (paired by seed):")
        print(avf.round(4).to_string(index=False))
        within = avf.groupby("domain", sort=False).within_se.all()
        chosen = avf.groupby("domain", sort=False).apply(lambda g: g.sort_values("N").chosen.tolist(), include_groups=False)
        grows = chosen.apply(lambda c: all(b >= a for a, b in zip(c, c[1:])))
        need = min(2, len(spec.domains))
        ok_within, ok_grow = int(within.sum()) >= need, bool(grows.all())
        print(f"\n  {'target':<58} {'measured':<34} result")
        print(f"  {'auto within 1 SE of the best fixed K at every N':<58} {', '.join(f'{d}: {w}' for d, w in within.items()):<34} "
              f"{'ok' if ok_within else 'MISSED'} (need {need} domains)")
        print(f"  {'auto chosen K non-decreasing in N on every domain':<58} "
              f"{'; '.join(f'{d}: ' + '/'.join(f'{x:.2f}' for x in c) for d, c in chosen.items()):<34} {'ok' if ok_grow else 'MISSED'}")
    if missing: print(f"\n{len(missing)} of {len(planned)} planned rows missing, e.g. {missing[:3]}: rerun to resume")
    return 1 if not (ok_within and ok_grow) else 2 if missing else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--domains", nargs="+", default=["education", "therapy", "chatting"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12])
    parser.add_argument("--only", choices=["all", "fixed", "auto"], default="all", help="run only these rows")
    parser.add_argument("--report", action="store_true", help="run nothing: print the targets on the rows there")
    parser.add_argument("--Ns", nargs="+", type=int, default=None, help="numbers of training conversations (default FULL's)")
    parser.add_argument("--auto-rule", default=None, help="TrainConfig.auto_rule of the auto rows (another folder: e.g. 'step')")
    parser.add_argument("--fixed-from", type=Path, default=None, help="report: the fixed-K rows of this folder")
    args = parser.parse_args()
    spec = spec_of(args.domains, args.seeds, args.Ns, args.auto_rule)
    if not args.report:
        command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        open_output(spec, args.output, command)
        f = ResultsCSV(args.output / "scaling.csv", "scaling")
        todo = [r for r in rows_of(spec, args.only) if f.key(dict(domain=r[0], N=r[3], K=r[2], seed=r[4])) not in f.done]
        t_start = time.time()
        for i, (domain, method, K, N, seed) in enumerate(todo, 1):
            t0 = time.time()
            saved = run_row(spec, args.output, domain, method, N, seed)
            chosen = sum(saved["chosen_K"]) / len(saved["chosen_K"]) if saved.get("chosen_K") else float("nan")
            ResultsCSV(args.output / "scaling.csv", "scaling").append(dict(domain=domain, N=N, K=K, seed=seed, pc=saved["pc_after"], chosen=chosen))
            print(f"[{i}/{len(todo)}] {domain} {method} N={N} seed={seed}: PC {saved['pc_after']:.3f} chosen {chosen:.2f} "
                  f"({time.time() - t0:.0f} s; {time.time() - t_start:.0f} s in all)", flush=True)
    raise SystemExit(report(args.output, spec, args.fixed_from))


if __name__ == "__main__":
    main()
