"""Peak memory and time of one training forward + backward pass, the loss's log-probs taken from the full logits
(`token_logprobs` of a `(B, T, V)` tensor) or lean (`model_logprobs`: the output layer at the agent's targets only, in
checkpointed chunks), with and without gradient checkpointing.

Each case runs in its own process (model loaded, LoRA added, one warm-up pass, then the measured pass) with
`MALLOC_MMAP_THRESHOLD_=65536`, so that freed tensors go back to the system and the process's peak resident set
(`ru_maxrss`) is the peak of what was live; the figure reported is that peak minus the resident set before the measured
pass. Every case also prints its loss, and the lean loss must equal the full one to 1e-5 relative.

    python tests/benchmarks/bench_logprob_memory.py                           # SmolLM2-135M, batch 4 x 1024 tokens
    python tests/benchmarks/bench_logprob_memory.py --model embedded --length 512 --save FILE

Exits non-zero when a target misses: lean / full peak memory at most 0.75 with gradient checkpointing (where the logits
are most of what is left) and at most 0.95 without; lean / full time at most 1.15; the losses equal.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"memory, checkpointing": 0.75, "memory, no checkpointing": 0.95, "time": 1.15}

CASE = r"""
import json, resource, sys, time, torch
from ppg_nb.model import add_lora, load_model, model_logprobs, token_logprobs
path, lean, checkpointing, B, T, agent_share = sys.argv[1], sys.argv[2] == "lean", sys.argv[3] == "1", *map(float, sys.argv[4:7])
B, T = int(B), int(T)
torch.manual_seed(0)
model, tok = load_model(path, gradient_checkpointing=checkpointing)
model = add_lora(model, 16, 32); model.train()
V = model.get_output_embeddings().weight.shape[0]
ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
attention = torch.ones_like(ids); attention[0, T // 2:] = 0                      # one padded row, as in a batch
mask = (torch.rand(B, T - 1, generator=torch.Generator().manual_seed(2)) < agent_share) & attention[:, 1:].bool()
def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
def step():
    if lean: logprobs = model_logprobs(model, ids, attention, mask)[0]
    else: logprobs = token_logprobs(model(input_ids=ids, attention_mask=attention).logits, ids, mask)
    loss = -logprobs.sum() / mask.sum()
    loss.backward(); model.zero_grad(set_to_none=True)
    return loss.item()
step()
before = rss()
start = time.perf_counter(); loss = step(); seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(loss=loss, seconds=seconds, peak_mib=peak - before, vocab=V, agent_tokens=int(mask.sum()))))
"""


def run_case(path: str, lean: bool, checkpointing: bool, batch: int, length: int, agent_share: float) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", CASE, path, "lean" if lean else "full", "1" if checkpointing else "0",
                          str(batch), str(length), str(agent_share)], env=env, capture_output=True, text=True)
    if out.returncode: raise SystemExit(f"case failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a named model, a folder, or 'embedded'")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--agent-share", type=float, default=0.4, help="share of the targets that carry a loss")
    parser.add_argument("--no-targets", action="store_true", help="print the ratios, never fail on them")
    parser.add_argument("--save", type=Path, help="write the cases and ratios to this JSON file")
    args = parser.parse_args(argv)
    from ppg_nb.model import model_path
    from ppg_nb.train import embedded_base
    path = str(embedded_base()) if args.model == "embedded" else model_path(args.model)
    cases, ratios, missed = {}, {}, []
    for checkpointing in (False, True):
        for lean in (False, True):
            name = f"{'lean' if lean else 'full'}, {'checkpointing' if checkpointing else 'no checkpointing'}"
            cases[name] = run_case(path, lean, checkpointing, args.batch, args.length, args.agent_share)
            c = cases[name]
            print(f"{name:>28}: peak {c['peak_mib']:7.0f} MiB, {c['seconds']:6.2f} s, loss {c['loss']:.6f}", flush=True)
        kind = "checkpointing" if checkpointing else "no checkpointing"
        full, lean = cases[f"full, {kind}"], cases[f"lean, {kind}"]
        ratios[f"memory, {kind}"] = lean["peak_mib"] / full["peak_mib"]
        ratios[f"time, {kind}"] = lean["seconds"] / full["seconds"]
        if abs(lean["loss"] - full["loss"]) > 1e-5 * abs(full["loss"]): missed.append(f"losses differ ({kind})")
    print(f"model {args.model}, batch {args.batch} x {args.length} tokens, {cases['full, checkpointing']['agent_tokens']} agent "
          f"targets, vocabulary {cases['full, checkpointing']['vocab']}")
    for name, ratio in ratios.items():
        target = TARGETS.get(name) or TARGETS["time"]
        print(f"lean / full {name:>26}: {ratio:.2f} (target <= {target})")
        if ratio > target: missed.append(f"{name}: {ratio:.2f} > {target}")
    if args.save:
        from ppg_nb.results import versions
        args.save.write_text(json.dumps(dict(model=args.model, batch=args.batch, length=args.length, agent_share=args.agent_share,
                                             cases=cases, ratios=ratios, missed=missed, versions=versions(),
                                             date=time.strftime("%Y-%m-%d")), indent=1) + "\n")
    for line in missed: print("MISS", line)
    return 1 if missed and not args.no_targets else 0


if __name__ == "__main__":
    sys.exit(main())
