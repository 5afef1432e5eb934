"""Benchmark: PPG inside TRL (`ppg_nb.trl.PPGTrainer`) beside `ppg_nb train`, on the same batch (not a pytest test).

Step time (default): both train the embedded base model (LoRA r=16, alpha=32, seed 0) online on the education domain, each
step rolling out the same number of dialogues of the same length (TRL: `--personas` personas x `--group` dialogues each;
ppg_nb: `online_batch` = their product, one persona each), judging every turn with the rule judge, crediting with K=2 and
taking one AdamW step (lr 1e-3, gradient clipping 1.0, constant schedule). A step's time counts rollout, judge, credit,
loss, backward and update: `time/step_s` of `ppg_nb train`, and the time from TRL's `on_step_begin` to `on_step_end` (its
rollout runs inside the step). Steps 2..N of each run count (the first warms up); the runs alternate in `--rounds` rounds so
they see the same machine load, and the best round of each is compared. Target: TRL / ppg_nb <= 1.5 (exit 1 on a miss).

PC (`--pc`): both train `--pc-steps` steps from the same seeds (LoRA init, rollouts), and persona consistency (rule judge)
is measured on the same held-out personas (`ppg_nb.evaluate.evaluate`, eval seed 12345) before and after. No target on which
is higher; the JSON keeps both side by side.

Run:  python tests/benchmarks/bench_trl_step.py [--steps 6] [--rounds 2] --save nbs/results/trl/step.json
      python tests/benchmarks/bench_trl_step.py --pc [--seeds 0 1] --save nbs/results/trl/pc.json
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import numpy as np
import torch
import transformers
import trl
from accelerate.state import AcceleratorState
from transformers import TrainerCallback
from trl import GRPOConfig

import ppg_nb
from ppg_nb.bases import embedded_base
from ppg_nb.evaluate import evaluate
from ppg_nb.model import add_lora, cpu_description, load_model
from ppg_nb.train import TrainConfig, train
from ppg_nb.trl import PersonaRollout, PPGTrainer, judge_reward

TARGET = 1.5  # TRL step time / ppg_nb train step time
ROOT = Path(__file__).resolve().parents[2]


class StepTimes(TrainerCallback):
    "Seconds of every optimiser step of a `Trainer` (on_step_begin to on_step_end: the GRPO rollout runs inside)."
    def __init__(self): self.times, self.start = [], None
    def on_step_begin(self, args, state, control, **kw): self.start = time.perf_counter()
    def on_step_end(self, args, state, control, **kw): self.times.append(time.perf_counter() - self.start)


def trl_run(args, seed: int, steps: int, out: Path, eval_personas: int = 0) -> dict:
    "PPGTrainer for `steps` steps; its step times, and PC before and after when `eval_personas`."
    model, tok = load_model(str(embedded_base("education")))
    model = add_lora(model, 16, 32, seed=seed)
    rollout = PersonaRollout("education", n_turns=args.n_turns, max_new_tokens=args.max_new_tokens, seed=seed)
    batch = args.personas * args.group
    config = GRPOConfig(output_dir=str(out), per_device_train_batch_size=batch, num_generations=args.group, max_steps=steps,
                        learning_rate=args.lr, lr_scheduler_type="constant", max_grad_norm=1.0, weight_decay=0.0,
                        loss_type="dapo", scale_rewards="none", beta=0.0, gradient_checkpointing=False, bf16=False, use_cpu=True,
                        seed=seed, report_to=[], save_strategy="no", logging_steps=10 ** 6, disable_tqdm=True)
    timer, generated = StepTimes(), []
    def counted(prompts, trainer):                  # the model's tokens of each step's rollouts (env_mask 1)
        out = rollout(prompts, trainer); generated.append(sum(map(sum, out["env_mask"]))); return out
    trainer = PPGTrainer(model, judge_reward("rule"), config, policy="kstep", policy_params={"K": 2},
                         train_dataset=rollout.dataset(args.personas * steps, seed=seed), processing_class=tok,
                         rollout_func=counted, callbacks=[timer])
    pc = lambda: evaluate(trainer.model, tok, "education", eval_personas, args.n_turns, 12345, 1.0, args.max_new_tokens).pc
    before = pc() if eval_personas else None
    trainer.train()
    AcceleratorState._reset_state(reset_partial_state=True)   # the next run (either trainer) sets up accelerate afresh
    return {"step_s": timer.times, "generated": generated, "pc_before": before, "pc_after": pc() if eval_personas else None}


def ppg_run(args, seed: int, steps: int, out: Path, eval_personas: int = 0) -> dict:
    "`ppg_nb train` online on the same batch size; its step times and PC before and after."
    result = train(TrainConfig(mode="online", online_batch=args.personas * args.group, batch_size=args.personas * args.group,
                               n_turns=args.n_turns, max_new_tokens=args.max_new_tokens, K=2, lr=args.lr, max_steps=steps,
                               eval_personas=eval_personas, seed=seed, progress=False, output=str(out)))
    AcceleratorState._reset_state(reset_partial_state=True)
    steps_ = [r for r in result.history if "time/step_s" in r]
    return {"step_s": [r["time/step_s"] for r in steps_], "generated": [r["train/generated_tokens"] for r in steps_],
            "pc_before": result.pc_before, "pc_after": result.pc_after}


def versions() -> dict:
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout
    git += "+dirty" if dirty.strip() else ""
    return {"ppg_nb": ppg_nb.__version__, "trl": trl.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(), "git": git,
            "threads": torch.get_num_threads(), **cpu_description()}


def step_times(args) -> dict:
    best, tokens = {"trl": np.inf, "ppg_nb": np.inf}, {}
    for r in range(args.rounds):
        for name, run in (("ppg_nb", ppg_run), ("trl", trl_run)):
            with tempfile.TemporaryDirectory() as tmp:
                got = run(args, 0, args.steps, Path(tmp) / name)
            times = got["step_s"]
            best[name] = min(best[name], float(np.median(times[1:])))
            tokens[name] = float(np.mean(got["generated"]))
            print(f"round {r + 1}: {name:7s} median step {np.median(times[1:]):.3f} s (steps 2..{len(times)}), "
                  f"{tokens[name]:.0f} generated tokens per step", flush=True)
    ratio = best["trl"] / best["ppg_nb"]
    print(f"\nstep time, {args.personas * args.group} dialogues x {args.n_turns} turns:  ppg_nb train {best['ppg_nb']:.3f} s   "
          f"TRL PPGTrainer {best['trl']:.3f} s   TRL / ppg_nb {ratio:.2f} (target <= {TARGET})")
    return {"step_s": best, "generated_tokens_per_step": tokens, "ratio": ratio, "target": TARGET, "met": bool(ratio <= TARGET)}


def pc_gain(args) -> dict:
    runs = {}
    for seed in args.seeds:
        for name, run in (("ppg_nb", ppg_run), ("trl", trl_run)):
            with tempfile.TemporaryDirectory() as tmp:
                r = run(args, seed, args.pc_steps, Path(tmp) / name, args.eval_personas)
            runs.setdefault(name, []).append({"seed": seed, "pc_before": r["pc_before"], "pc_after": r["pc_after"],
                                              "mean_step_s": float(np.mean(r["step_s"]))})
            print(f"seed {seed}: {name:7s} PC {r['pc_before']:.3f} -> {r['pc_after']:.3f}", flush=True)
    gain = {n: float(np.mean([x["pc_after"] - x["pc_before"] for x in v])) for n, v in runs.items()}
    print(f"\nmean PC gain over seeds {args.seeds}: ppg_nb train {gain['ppg_nb']:+.3f}   TRL PPGTrainer {gain['trl']:+.3f}")
    return {"runs": runs, "mean_gain": gain, "steps": args.pc_steps, "eval_personas": args.eval_personas}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="steps per timing run (the first is not counted)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two timing runs")
    parser.add_argument("--personas", type=int, default=4, help="personas per step (TRL's groups)")
    parser.add_argument("--group", type=int, default=4, help="dialogues per persona (TRL's num_generations)")
    parser.add_argument("--n-turns", type=int, default=6, help="model turns per dialogue")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="longest model line")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of both")
    parser.add_argument("--pc", action="store_true", help="compare PC before/after instead of step times")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="--pc: seeds of both trainers")
    parser.add_argument("--pc-steps", type=int, default=30, help="--pc: training steps of each run")
    parser.add_argument("--eval-personas", type=int, default=64, help="--pc: held-out personas")
    parser.add_argument("--no-targets", action="store_true", help="print the ratio without enforcing the target")
    parser.add_argument("--save", type=Path, default=None, help="write the numbers, machine and versions to this JSON file")
    args = parser.parse_args()
    result = pc_gain(args) if args.pc else step_times(args)
    settings = {k: getattr(args, k) for k in ("personas", "group", "n_turns", "max_new_tokens", "lr")}
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        command = "python tests/benchmarks/bench_trl_step.py " + " ".join(sys.argv[1:])
        args.save.write_text(json.dumps({"command": command, "date": time.strftime("%Y-%m-%d"), "settings": settings,
                                         "versions": versions(), **result}, indent=1) + "\n")
    if not args.pc and not result["met"] and not args.no_targets:
        print(f"MISSED: TRL / ppg_nb step time {result['ratio']:.2f} > {TARGET}", file=sys.stderr); sys.exit(1)


if __name__ == "__main__":
    main()
