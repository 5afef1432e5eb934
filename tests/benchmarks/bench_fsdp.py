"""FSDP2 on 2 CPU processes against 1 process, on the same global batch: step-1 loss (must agree to 1e-5 relative: exits 1
otherwise), step time, and the memory of each process against `ppg_nb.sharded.lora_memory` (the formula of nbs/10a_sharded).

    python tests/benchmarks/bench_fsdp.py --model smollm2-135m-instruct --save nbs/results/fsdp/smollm2.json
    python tests/benchmarks/bench_fsdp.py --model embedded --save nbs/results/fsdp/embedded.json
    python tests/benchmarks/bench_fsdp.py --model embedded --baseline batch --normalize-advantages   # statistics of the whole batch

Memory on CPU is the resident set: `runtime_mb` is a process's resident set after its imports, before any model (torch,
transformers, peft, accelerate, gloo); `load_peak_mb` the peak of the whole run (each process loads the full model before
accelerate shards it); `step_peak_mb` the peak of the training steps after the first (VmHWM reset after step 1). glibc's mmap threshold is
fixed (MALLOC_MMAP_THRESHOLD_=65536) so that freed tensors leave the resident set, which then follows the live tensors. The
formula predicts `step_peak_mb - runtime_mb`, the memory of the model, its adapter, optimiser and activations.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "fsdp2_cpu.yaml"
TOLERANCE = 1e-5


def _rss_mb() -> float:
    return int(next(l.split()[1] for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))) / 1024


def worker(args) -> None:
    "One process of a run (under `accelerate launch` or alone): train, measure, write `<out>/bench_<rank>.json`."
    import torch
    from ppg_nb.train import TrainConfig, peak_memory_mb, reset_peak_memory, train
    import peft, transformers  # noqa: F401  (imported before the runtime's resident set is read)
    import ppg_nb.train as T
    runtime, steps, peaks, shapes = _rss_mb(), [], {}, []
    forward = T.forward_logprobs
    def recorded(model, batch, lean=True):   # the padded micro-batch the step runs: what the activations are made of
        shapes.append((batch.input_ids.numel(), int((batch.turn_of_target >= 0).sum())))
        return forward(model, batch, lean)
    T.forward_logprobs = recorded
    def callback(step, record):
        steps.append({**{k: record[k] for k in ("train/loss", "train/tokens", "train/agent_tokens", "time/step_s")},
                      "padded_tokens": max(s[0] for s in shapes), "agent_tokens": max(s[1] for s in shapes)})
        shapes.clear()
        if step == 1: peaks["load"] = peak_memory_mb("cpu"); reset_peak_memory()
        if step == args.steps: peaks["steps"] = peak_memory_mb("cpu")      # before the final checkpoint
    cfg = TrainConfig(model=args.model, mode="offline", n_conversations=args.conversations, n_turns=args.turns,
                      batch_size=args.batch // args.world, max_steps=args.steps, eval_personas=0, lora_r=args.lora_r,
                      baseline=None if args.baseline == "none" else args.baseline,
                      normalize_advantages=args.normalize_advantages, progress=False, output=str(Path(args.out) / "run"), max_length=args.max_length,
                      base_conversations=args.base_conversations, base_steps=args.base_steps)
    result = train(cfg, callback=callback)
    rank = int(os.environ.get("RANK", 0))
    Path(args.out, f"bench_{rank}.json").write_text(json.dumps(
        {"rank": rank, "runtime_mb": runtime, "step_peak_mb": peaks["steps"], "load_peak_mb": peaks["load"],
         "steps": steps, "threads": torch.get_num_threads()}))


def run(args, world: int) -> list[dict]:
    out = Path(tempfile.mkdtemp(prefix=f"bench_fsdp_{world}_"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    mine = [__file__, "--worker", "--out", str(out), "--world", str(world)] + sys.argv[1:]
    cmd = ([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--num_processes", str(world)] + mine
           if world > 1 else [sys.executable] + mine)
    started = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode: sys.exit(f"world={world} failed:\n{done.stderr[-4000:]}")
    found = [json.loads(p.read_text()) for p in sorted(out.glob("bench_*.json"))]
    for f in found: f["wall_s"] = time.time() - started
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batch", type=int, default=4, help="global batch (sequences per step, over all processes)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--conversations", type=int, default=16)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--baseline", default="none", help="'none' (as measured in nbs/results/fsdp), 'batch' (the trainer's "
                   "default) or 'running': their mean over every process's rows")
    p.add_argument("--normalize-advantages", action="store_true", help="divide by the whole batch's standard deviation")
    p.add_argument("--threads", type=int, default=1, help="threads of each process (OMP_NUM_THREADS)")
    p.add_argument("--base-conversations", type=int, default=3000, help="embedded base: as the default run's")
    p.add_argument("--base-steps", type=int, default=400)
    p.add_argument("--save", default=None, help="write the measurements (JSON) here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker: return worker(args)

    from ppg_nb.model import model_path
    from ppg_nb.sharded import lora_memory
    from ppg_nb.train import embedded_base
    folder = (embedded_base("education", args.base_conversations, args.base_steps, 0) if args.model == "embedded"
              else model_path(args.model))
    model_config = json.loads((Path(folder) / "config.json").read_text())
    runs = {world: run(args, world) for world in (1, 2)}
    one, two = runs[1][0], runs[2][0]
    loss1, loss2 = one["steps"][0]["train/loss"], two["steps"][0]["train/loss"]
    rel = abs(loss2 - loss1) / abs(loss1)
    import platform, torch
    report = {"command": "python tests/benchmarks/bench_fsdp.py " + " ".join(sys.argv[1:]), "torch": torch.__version__,
              "cpus": os.cpu_count(), "machine": platform.machine(), "model": args.model,
              "model_config": {k: model_config.get(k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size",
                               "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings")}, "global_batch": args.batch, "baseline": args.baseline,
              "normalize_advantages": args.normalize_advantages, "lora_r": args.lora_r, "steps": args.steps, "threads": args.threads,
              "step1_loss": {"1": loss1, "2": loss2, "relative_difference": rel}, "runs": {}}
    print(f"{args.model}: global batch {args.batch}, baseline {args.baseline}{', normalised' if args.normalize_advantages else ''}, "
          f"LoRA r={args.lora_r}, {args.threads} thread(s) per process")
    for world, found in runs.items():
        for f in found:
            later = f["steps"][1:] or f["steps"]
            tokens = max(s["padded_tokens"] for s in later); agent = max(s["agent_tokens"] for s in later)
            predicted = lora_memory(model_config, world, tokens, agent, args.lora_r)
            measured = f["step_peak_mb"] - f["runtime_mb"]
            row = {"runtime_mb": f["runtime_mb"], "load_peak_mb": f["load_peak_mb"], "step_peak_mb": f["step_peak_mb"],
                   "measured_model_mb": measured, "predicted_mb": predicted["total_mb"], "predicted_parts_mb": predicted["parts_mb"],
                   "tokens": tokens, "agent_tokens": agent, "step_s": [s["time/step_s"] for s in f["steps"]], "wall_s": f["wall_s"]}
            report["runs"][f"{world}/{f['rank']}"] = row
            print(f"  {world} process(es), rank {f['rank']}: step {sum(row['step_s'][1:]) / max(1, len(row['step_s']) - 1):.2f} s "
                  f"(steps after the first), peak {f['step_peak_mb']:.0f} MiB in steps ({f['load_peak_mb']:.0f} with loading), "
                  f"runtime {f['runtime_mb']:.0f} MiB; model memory measured {measured:.0f} MiB, formula {predicted['total_mb']:.0f} MiB "
                  f"({(predicted['total_mb'] - measured) / measured:+.0%})")
    ok = rel <= TOLERANCE
    print(f"step-1 loss: 1 process {loss1:.8f}, 2 processes (FSDP2) {loss2:.8f}, relative difference {rel:.2e} "
          f"({'within' if ok else 'MISSES'} {TOLERANCE:g})")
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(report, indent=1) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
