"""The paper's online setting on the real substrate at CPU scale, end to end (not a pytest test; issue 25, item 3).

SmolLM2-135M-Instruct plays the persona (the Student) of Consistent-LLMs education dialogues against an LLM partner (the
Teacher) served by vLLM, its lines scored by an LLM judge asked over the OpenAI API, and is trained online with PPG for a
few steps: greedy, K = 2 and full credit. ONE vLLM server (`ppg_nb.engine.VLLMServer`, SmolLM2 with LoRA enabled) plays
all three roles: the partner (`--partner openai:base@URL`), the judge (`--judge openai:base@URL`) and the rollout engine
(`--rollout-engine vllm --engine-url URL`, the policy's LoRA adapter loaded into it after every update). Partner and
judge ask for the model "base" (the adapter off), the rollouts for the adapter by its name, so one server can do all three.

What it writes to `--output` (a `ppg_nb.results.ResultsFolder` of kind "online_real"; meta.json records the commands and versions):
  agreement.csv   the API judge against the 70B labels: AUC, accuracy and the majority-class accuracy on the labelled
                  lines of the held-out personas (the split of nbs/15_real: `ppg_nb.real.real_data(REAL_FULL)`)
  online_real.csv one row per method ("base" = the model before training, then each trained adapter): the judged PC of its
                  lines in `--eval-conversations` held-out conversations played live against the vLLM partner, the judge's
                  agreement beside it, the training steps and seconds per step, and the `ppg_nb train` command it equals
  dialogues/<method>.json  the first `--keep-dialogues` of those conversations, scored, before (base) and after training
  runs/, data/    adapters and the derived JSONL files (ignored by git: the data is not ours to ship)
Resumable: the agreement and every method's row are skipped when they are already in their table; a method whose
training finished (runs/<method>/result.json) is not trained again; one cut mid-training starts over.

Run:  PPG_VLLM_PYTHON=/path/to/vllm/python python tests/benchmarks/run_online_real.py \\
          --data-dir $PPG_DATA/full --output nbs/results/engine/online_real
A real judge or partner is one flag each (the server still serves the rest; use a new --output):
      --judge openai:gpt-4o-mini@https://api.openai.com/v1                  (key in $PPG_NB_JUDGE_API_KEY)
      --partner openai:meta-llama/Llama-3.1-70B-Instruct@URL                (key in $PPG_NB_PARTNER_API_KEY)
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from ppg_nb.data import conversation_to_dict, load_conversations
from ppg_nb.engine import EngineSampler, VLLMServer
from ppg_nb.evaluate import persona_consistency
from ppg_nb.experiments import method_config
from ppg_nb.judge import judge_agreement, load_judge
from ppg_nb.model import load_model, model_path
from ppg_nb.partner import converse, load_partner
from ppg_nb.real import REAL_FULL, real_data
from ppg_nb.results import ResultsFolder
from ppg_nb.rollout import stop_ids
from ppg_nb.train import train, TrainConfig

MODEL = "smollm2-135m-instruct"
AGREEMENT_COLUMNS = ("judge", "auc", "accuracy", "majority_accuracy", "consistent_share", "n_lines", "seconds")
COLUMNS = ("method", "seed", "pc", "pc_by_turn", "n_conversations", "n_lines", "judge", "judge_auc", "judge_accuracy",
           "judge_majority_accuracy", "steps", "train_seconds", "step_s", "rollout_s", "eval_seconds", "train_command")
TYPES = dict(seed=int, pc=float, n_conversations=int, n_lines=int, judge_auc=float, judge_accuracy=float,
             judge_majority_accuracy=float, steps=int, train_seconds=float, step_s=float, rollout_s=float, eval_seconds=float)


def train_overrides(args, method: str, data: Path, url: str, output: Path) -> dict:
    "The `TrainConfig` fields of one method's online run (the same for every method but the credit set)."
    remote = f"openai:base@{url}"
    return dict(model=MODEL, data=str(data), mode="online", partner=args.partner or remote, judge=args.judge or remote,
                rollout_engine="vllm", engine_url=url,
                **method_config(method), online_batch=args.online_batch, batch_size=args.online_batch, n_turns=args.turns,
                max_new_tokens=args.max_new_tokens, temperature=1.0, max_steps=args.steps, lr=args.lr, max_length=args.max_length,
                seed=args.seed, output=str(output), progress=False)


def cli_command(overrides: dict) -> str:
    "The `ppg_nb train` command line that runs the same training as `train(TrainConfig(**overrides))`."
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in overrides.items() if k != "progress"]
    return "python -m ppg_nb train " + " ".join(flags) + " --no-progress"


def trained(args, method: str, data: Path, url: str, run_dir: Path, log) -> tuple[dict, list, str]:
    "result.json, the logged steps and the command of one method's run, trained here unless it finished before."
    overrides = train_overrides(args, method, data, url, run_dir)
    if not (run_dir / "result.json").exists():
        if run_dir.exists(): shutil.rmtree(run_dir)                     # cut mid-training: start over (a few minutes)
        log(f"[{method}] training online into {run_dir}")
        train(TrainConfig(**overrides))
    steps = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in steps if "time/step_s" in r]
    return json.loads((run_dir / "result.json").read_text()), steps, cli_command(overrides)


def dialogues(args, model, tok, starts, url: str, adapter: Path | None, judge) -> tuple:
    "The model (base, or a trained adapter loaded into the server) against the vLLM partner from each start, judged."
    engine = EngineSampler(url, stop_ids(model, tok), temperature=1.0, max_new_tokens=args.max_new_tokens, seed=args.eval_seed)
    if adapter is not None: engine.load_adapter(adapter, f"eval-{adapter.parent.name}")
    try:
        convs, _ = converse(model, tok, starts, load_partner(args.partner or f"openai:base@{url}"), args.turns, 1.0, args.max_new_tokens,
                            args.eval_seed, sampler=engine)
    finally: engine.close()                                            # unloads the adapter (the server keeps running)
    return persona_consistency(judge.score_into(convs))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/consistent_llms/full"),
                        help="the folder holding the Consistent-LLMs files (education__gemma-2-2b-it_len_10.json)")
    parser.add_argument("--output", type=Path, default=Path("nbs/results/engine/online_real"))
    parser.add_argument("--judge", default=None, help="the judge ('openai:MODEL@URL', key in $PPG_NB_JUDGE_API_KEY, or any "
                        "`ppg_nb.judge.load_judge` spec); default: SmolLM2 on the script's vLLM server, asked as 'openai:base@URL'")
    parser.add_argument("--partner", default=None, help="the partner ('openai:MODEL@URL', key in $PPG_NB_PARTNER_API_KEY); "
                        "default: SmolLM2 on the script's vLLM server, asked as 'openai:base@URL'")
    parser.add_argument("--methods", nargs="+", default=["greedy", "kstep-2", "full"])
    parser.add_argument("--steps", type=int, default=4, help="online PPG steps per method")
    parser.add_argument("--online-batch", type=int, default=4, help="conversations rolled out per step (= the training batch)")
    parser.add_argument("--turns", type=int, default=3, help="agent (Student) lines per conversation, in training and evaluation")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="longest Student line")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW's learning rate (TrainConfig's default)")
    parser.add_argument("--max-length", type=int, default=1024, help="longest training sequence in tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed of every training run")
    parser.add_argument("--eval-conversations", type=int, default=8, help="held-out conversations each model plays after training")
    parser.add_argument("--eval-seed", type=int, default=1234, help="seeds the partner and the Student in the evaluation dialogues")
    parser.add_argument("--keep-dialogues", type=int, default=3, help="evaluation dialogues saved per method")
    parser.add_argument("--agreement-lines", type=int, default=200, help="held-out labelled lines the judge is measured on (at most)")
    parser.add_argument("--max-model-len", type=int, default=2048, help="the vLLM server's context (and max batched tokens)")
    parser.add_argument("--server-threads", type=int, default=1,
                        help="OpenMP threads of the vLLM server (OMP_NUM_THREADS); on a 2-core machine shared with other jobs one "
                             "thread decoded 64 tokens in 3.6 s where two took 52 s (threads that wait on each other at every op)")
    args = parser.parse_args()
    log = lambda msg: print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    spec = dict(name="cpu", model=MODEL, train_file=REAL_FULL.train_file, held_out=REAL_FULL.held_out, methods=args.methods,
                steps=args.steps, online_batch=args.online_batch, turns=args.turns, max_new_tokens=args.max_new_tokens, lr=args.lr,
                max_length=args.max_length, seed=args.seed, eval_conversations=args.eval_conversations, eval_seed=args.eval_seed,
                agreement_lines=args.agreement_lines, server_threads=args.server_threads,
                partner=args.partner or "openai:base (SmolLM2 on vLLM)", judge=args.judge or "openai:base (SmolLM2 on vLLM)")
    folder = ResultsFolder(args.output, "online_real", spec, command=" ".join(["python", *sys.argv]), ignore=("data/", "runs/"))
    paths = real_data(REAL_FULL, args.data_dir, args.output)           # the split of nbs/15_real (train / held-out personas)
    held_out = load_conversations(paths["held_out"])
    agreement = folder.table("agreement", AGREEMENT_COLUMNS, key=("judge",), types=dict(
        auc=float, accuracy=float, majority_accuracy=float, consistent_share=float, n_lines=int, seconds=float))
    table = folder.table("online_real", COLUMNS, key=("method", "seed"), types=TYPES)
    todo = [m for m in ["base", *args.methods] if (m, args.seed) not in table.refresh()]
    if not todo and agreement.refresh():
        log("every row is there: nothing to do"); folder.finish(); return

    server = VLLMServer(model_path(MODEL), lora_rank=16, max_model_len=args.max_model_len)
    if args.server_threads: server.env["OMP_NUM_THREADS"] = str(args.server_threads)
    log(f"starting the vLLM server (half a minute or more; log {server.log_path})")
    started = time.time()
    server.start()
    log(f"vLLM server on {server.url} in {time.time() - started:.0f} s (log {server.log_path}): partner, judge and rollout engine")
    folder.update(entry=dict(server_command=" ".join(server.command), server_start_s=time.time() - started,
                             server_env={k: server.env[k] for k in ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND",
                                                                    "VLLM_CPU_KVCACHE_SPACE") if k in server.env}))
    try:
        url = server.url
        judge = load_judge(args.judge or f"openai:base@{url}")
        judge_name = args.judge or "openai:base (SmolLM2-135M-Instruct on vLLM)"
        if not agreement.refresh():
            t0 = time.time()
            a = judge_agreement(judge, held_out, args.agreement_lines)
            agreement.append(dict(judge=judge_name, **{k: a[k] for k in AGREEMENT_COLUMNS[1:-1]}, seconds=time.time() - t0))
            log(f"judge agreement with the 70B labels on {a['n_lines']} held-out lines: AUC {a['auc']:.3f}, accuracy "
                f"{a['accuracy']:.3f} (majority class {a['majority_accuracy']:.3f})")
        a = agreement.frame().iloc[0]
        model, tok = load_model(model_path(MODEL), device="cpu")
        starts = held_out[:args.eval_conversations]
        (args.output / "dialogues").mkdir(exist_ok=True)
        for method in todo:
            with folder.claim(method, wait=True):
                if (method, args.seed) in table.refresh(): continue
                row = dict(method=method, seed=args.seed, steps=0, train_seconds=0.0, step_s=float("nan"), rollout_s=float("nan"),
                           train_command="")
                adapter = None
                if method != "base":
                    run_dir = args.output / "runs" / method
                    result, steps, command = trained(args, method, paths["train"], url, run_dir, log)
                    adapter = run_dir / "adapter"
                    row.update(steps=result["steps"], train_seconds=result["seconds"], train_command=command,
                               step_s=sum(r["time/step_s"] for r in steps) / len(steps),
                               rollout_s=sum(r["time/generate_s"] for r in steps) / len(steps))
                t0 = time.time()
                torch.manual_seed(args.eval_seed)
                ev = dialogues(args, model, tok, starts, url, adapter, judge)
                row.update(pc=ev.pc, pc_by_turn=json.dumps([round(x, 4) for x in ev.pc_by_turn]), n_conversations=len(starts),
                           n_lines=sum(len(c.rewards) for c in ev.conversations), judge=judge_name, judge_auc=float(a["auc"]),
                           judge_accuracy=float(a["accuracy"]), judge_majority_accuracy=float(a["majority_accuracy"]),
                           eval_seconds=time.time() - t0)
                (args.output / "dialogues" / f"{method}.json").write_text(json.dumps(
                    [conversation_to_dict(c) for c in ev.conversations[:args.keep_dialogues]], indent=1, ensure_ascii=False) + "\n")
                table.append(row)
            log(f"[{method}] judged PC {row['pc']:.3f} on {row['n_lines']} lines (judge AUC {row['judge_auc']:.3f}); "
                + (f"{row['steps']} steps, {row['step_s']:.0f} s a step; " if method != "base" else "") + f"eval {row['eval_seconds']:.0f} s")
    finally:
        server.stop()
    folder.finish()
    print(table.frame().drop(columns=["train_command"]).to_string())


if __name__ == "__main__":
    main()
