"""Fingerprint of short `train` runs, to check that a refactor of the trainer changed no behaviour (not a pytest test).

Six short runs on the embedded base (online; online with PPO clip, critic and KL; K='auto' online and offline; offline;
greedy with per-turn normalisation and normalised advantages), each 2 or 3 steps: every log record (timings left out) and
the sha256 of the adapter. Same code, same seed, same CPU: the same fingerprint, bit for bit.

    python tests/benchmarks/fingerprint_train.py --save before.json      # on the old commit
    python tests/benchmarks/fingerprint_train.py --compare before.json   # on the new one: exits 1 on any difference

A key a change adds to the log is reported, not counted as a difference; a key it removes or a value it changes is.
"""
import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from ppg_nb.train import train

RUNS = {
    "online": dict(max_steps=2, online_batch=4, n_turns=4, eval_personas=4),
    "online_ppo": dict(max_steps=2, online_batch=4, n_turns=3, eval_personas=0, clip=0.2, ppo_epochs=2, baseline="value",
                       kl_coef=0.1, batch_size=2),
    "online_auto": dict(max_steps=2, online_batch=4, n_turns=4, eval_personas=0, K="auto"),
    "offline": dict(mode="offline", n_conversations=32, max_steps=2, batch_size=4, n_turns=4, eval_personas=0),
    "offline_auto": dict(mode="offline", n_conversations=32, max_steps=3, batch_size=4, grad_accum=2, n_turns=4,
                         eval_personas=0, K="auto", baseline="running"),
    "online_greedy_norm": dict(max_steps=2, online_batch=4, n_turns=4, eval_personas=0, policy="greedy", normalize="turn",
                               normalize_advantages=True),
}
UNTIMED = ("time/", "train/tokens_per_s")


def fingerprint(name: str) -> dict:
    "The log records (without timings), the adapter's sha256 and the result (without timings) of one short run."
    with tempfile.TemporaryDirectory() as d:
        result = train(output=f"{d}/run", progress=False, seed=3, **RUNS[name])
        log = [{k: v for k, v in json.loads(line).items() if not k.startswith(UNTIMED)} for line in open(f"{d}/run/log.jsonl")]
        adapter = hashlib.sha256(Path(f"{d}/run/adapter/adapter_model.safetensors").read_bytes()).hexdigest()
        kept = {k: v for k, v in result.to_dict().items() if k not in ("seconds", "peak_memory_mb", "output", "tokens_per_s", "config")}
        kept["base_model"] = Path(kept["base_model"]).name          # the base's name, not where this checkout keeps it
        return json.loads(json.dumps({"log": log, "adapter": adapter, "result": kept}, default=str))


def differences(old: dict, new: dict) -> tuple[list[str], list[str]]:
    "What differs between two fingerprints, and the log keys only the new one has."
    diff, added = [], set()
    for name in old:
        a, b = old[name], new[name]
        if a["adapter"] != b["adapter"]: diff.append(f"{name}: adapter {a['adapter'][:12]} -> {b['adapter'][:12]}")
        if a["result"] != b["result"]: diff.append(f"{name}: result.json differs")
        for ra, rb in zip(a["log"], b["log"]):
            added |= set(rb) - set(ra)
            diff += [f"{name} step {ra['step']}: {k} {ra[k]!r} -> {rb.get(k)!r}" for k in ra if ra[k] != rb.get(k)]
    return diff, sorted(added)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, help="write the fingerprint here")
    group.add_argument("--compare", type=Path, help="compare with a saved fingerprint; exit 1 on a difference")
    args = parser.parse_args()
    new = {}
    for name in RUNS:
        new[name] = fingerprint(name)
        print(f"{name}: adapter {new[name]['adapter'][:12]}, losses {[round(r['train/loss'], 6) for r in new[name]['log']]}", flush=True)
    if args.save:
        args.save.write_text(json.dumps(new, indent=1))
        return 0
    diff, added = differences(json.loads(args.compare.read_text()), new)
    if added: print("log keys the change adds:", ", ".join(added))
    print("\n".join(diff) if diff else "identical: every adapter, log value and result")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
