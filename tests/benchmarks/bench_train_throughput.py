"""Benchmark: training and generation throughput of `ppg_nb.train.train`, side by side (not a pytest test).

Offline, three trainers run the same LoRA model (the embedded base, `TrainConfig`'s LoRA settings) on the same micro-batches
(`batch_indices` of the same seed, in the same order), each doing a forward, a loss on the agent tokens, a backward,
gradient clipping and an AdamW step:
  * `train`: our trainer (it also collates, computes advantages, logs and drives tqdm);
  * the bare loop: the plainest PyTorch loop over batches collated beforehand;
  * TRL's `SFTTrainer`: the library a user would pick instead, given the same tokenized examples (labels -100 off the
    agent's tokens) in the same order.
Tokens/s is counted over steps 2..N of each (the first step warms up), the three interleaved in rounds so they see the same
machine load, the best round of each compared. Targets: train / bare loop >= 0.90, train / SFTTrainer >= 1.0.

Online, one `train` run (`online_batch` rollouts a step) prints where a step's time goes (generate / score / update); then the
exact prompts its rollouts read (ids, every turn of every rollout) are generated again with the same LoRA model three ways,
interleaved in rounds: `LineSampler` (what rollouts call: one per rollout, the KV cache kept from turn to turn),
`sample_lines` (the stateless path: every prompt read from its start; sampling log-probs, stop tokens) and a bare
`model.generate` loop over the same prompts. Targets in generation tokens/s: sample_lines / bare generate >= 0.90 (the
sampler's own overhead), LineSampler / bare generate >= 1.0 (what the rollouts actually run beats plain generate).

The script exits non-zero when it misses a target (unless --no-targets: CI runs the short form
`--steps 4 --rounds 1 --online-steps 1 --no-targets` on a tiny base, which checks that it completes and prints every ratio).
Run:  python tests/benchmarks/bench_train_throughput.py [--steps 30] [--rounds 3] [--batch-size 16] [--online-steps 3]
(uses the embedded base model of the default recipe from the cache; the first run builds it, a few minutes)
"""
import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import ppg_nb.rollout as E
from ppg_nb.model import add_lora, cpu_description, load_model, token_logprobs
from ppg_nb.credit import conversation_returns
from ppg_nb.render import collate, encode_conversations
from ppg_nb.train import TrainConfig, batch_indices, embedded_base, load_data, ppg_loss, train

TARGETS = {"train / bare loop": 0.90, "train / SFTTrainer": 1.0, "sample_lines / bare generate": 0.90,
           "LineSampler / bare generate": 1.0}


def _lora_model(base: Path, config: TrainConfig):
    model, tok = load_model(str(base))
    return add_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, seed=config.seed), tok


def _examples(base: Path, config: TrainConfig, steps: int):
    "The micro-batches `train` takes, in its order: a list of lists of `Example`, and the partial returns."
    _, tok = load_model(str(base))
    conversations, _ = load_data(config)
    examples, _ = encode_conversations(conversations, tok, config.max_length)
    returns = conversation_returns(conversations, config.policy, **config.policy_params)
    return [[examples[i] for i in batch_indices(len(examples), config.batch_size, s, config.seed)] for s in range(steps)], returns, tok


def _rate(tokens: list[int], seconds: list[float]) -> float: return sum(tokens[1:]) / sum(seconds[1:])


def bare_loop(base: Path, config: TrainConfig, steps: int) -> float:
    "Tokens/s of the plainest loop over pre-collated batches."
    model, tok = _lora_model(base, config)
    micro, returns, _ = _examples(base, config, steps)
    batches = [collate(b, tok.pad_token_id, returns) for b in micro]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    model.train()
    tokens, seconds = [], []
    for batch in batches:
        start = time.perf_counter()
        mask = batch.turn_of_target >= 0
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = ppg_loss(token_logprobs(logits, batch.input_ids, mask), batch.turn_of_target, batch.turn_returns)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step(); optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start); tokens.append(int(batch.attention_mask.sum()))
    return _rate(tokens, seconds)


def sft_trainer(base: Path, config: TrainConfig, steps: int) -> float:
    "Tokens/s of TRL's `SFTTrainer` on the same model, LoRA adapter and micro-batches (in the same order)."
    from accelerate.state import AcceleratorState
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer
    model, tok = _lora_model(base, config)
    micro, _, _ = _examples(base, config, steps)
    rows = [ex for batch in micro for ex in batch]
    data = Dataset.from_dict({"input_ids": [ex.input_ids for ex in rows],
                              "labels": [[i if t >= 0 else -100 for i, t in zip(ex.input_ids, ex.turn_of_token)] for ex in rows]})

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *args, **kwargs): return SequentialSampler(self.train_dataset)

    class Clock(TrainerCallback):
        seconds, started = [], 0.0
        def on_step_begin(self, args, state, control, **kw): self.started = time.perf_counter()
        def on_step_end(self, args, state, control, **kw): self.seconds.append(time.perf_counter() - self.started)

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(output_dir=tmp, per_device_train_batch_size=config.batch_size, max_steps=steps,
                         learning_rate=config.lr, lr_scheduler_type="constant", warmup_steps=0,
                         max_grad_norm=config.max_grad_norm, optim="adamw_torch", weight_decay=0.0, save_strategy="no",
                         logging_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0,
                         dataset_kwargs={"skip_prepare_dataset": True}, max_length=None, disable_tqdm=True,
                         bf16=False, fp16=False)  # float32 like the others (SFTConfig's default is bf16)
        InOrder(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[clock]).train()
    AcceleratorState._reset_state(reset_partial_state=True)  # the Trainer's accelerate state must not leak into `train`
    tokens = [sum(len(ex.input_ids) for ex in batch) for batch in micro]
    return _rate(tokens, clock.seconds)


def ours(config: TrainConfig, steps: int) -> float:
    "Tokens/s of `train` over its steps 2..N (its log has each step's tokens and seconds)."
    with tempfile.TemporaryDirectory() as tmp:
        history = train(config, output=str(Path(tmp) / "run"), max_steps=steps).history
    assert all(r["mode"] == "offline" and "time/generate_s" not in r for r in history), "train ran online"
    return _rate([r["train/tokens"] for r in history], [r["time/step_s"] for r in history])


def online(base: Path, config: TrainConfig, steps: int, rounds: int) -> dict:
    "An online run's time split; then generation tokens/s on the exact prompts its rollouts read, three ways."
    rollouts, real = {}, E.LineSampler.__call__                # each rollout's sampler, and the prompts of its every turn
    def recording(self, prompts):
        rollouts.setdefault(id(self), []).append([list(p) for p in prompts])
        return real(self, prompts)
    E.LineSampler.__call__ = recording
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = dataclasses.replace(config, mode="online", max_steps=steps, output=str(Path(tmp) / "run"))
            history = train(config).history
    finally:
        E.LineSampler.__call__ = real
    if not rollouts: raise RuntimeError("the online run sampled no line through LineSampler: what do rollouts call now?")
    assert all(r["mode"] == "online" for r in history)
    split = {k: sum(r[f"time/{k}_s"] for r in history) for k in ("generate", "score", "update")}
    turns = [batch for rollout in rollouts.values() for batch in rollout]
    model, tok = _lora_model(base, config)
    model.eval()
    stops = E.stop_ids(model, tok)

    def rollout_sampler():  # what rollouts call: one LineSampler per rollout, the KV cache kept from turn to turn
        tokens, start = 0, time.perf_counter()
        for rollout in rollouts.values():
            sampler = E.LineSampler(model, tok, 1.0, config.max_new_tokens, stops)
            for batch in rollout: tokens += sum(len(ids) for ids, _ in sampler(batch))
        return tokens / (time.perf_counter() - start)

    def stateless():  # `sample_lines`: every prompt read from its start (sampling log-probs, stop tokens)
        tokens, start = 0, time.perf_counter()
        for batch in turns: tokens += sum(len(ids) for ids, _ in E.sample_lines(model, tok, batch, 1.0, config.max_new_tokens, stops))
        return tokens / (time.perf_counter() - start)

    def bare_generate():  # plain sampling: no log-probs, no stop tokens; counted up to each row's first end of turn
        tokens, seconds = 0, 0.0
        with E.generation_threads(model):
            for batch in turns:
                width = max(map(len, batch))
                ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in batch])
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
                start = time.perf_counter()
                with torch.no_grad():
                    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=None,
                                         top_k=None, max_new_tokens=config.max_new_tokens, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.eos_token_id)
                seconds += time.perf_counter() - start
                new = out[:, width:]
                ended = (new == tok.eos_token_id).int().cumsum(1)
                tokens += int(((ended == 0) | ((ended == 1) & (new == tok.eos_token_id))).sum())
        return tokens / seconds

    best = {"LineSampler": 0.0, "sample_lines": 0.0, "bare": 0.0}
    for _ in range(rounds):
        torch.manual_seed(0); best["LineSampler"] = max(best["LineSampler"], rollout_sampler())
        torch.manual_seed(0); best["sample_lines"] = max(best["sample_lines"], stateless())
        torch.manual_seed(0); best["bare"] = max(best["bare"], bare_generate())
    return {"split": split, **best, "steps": steps, "rollouts": config.online_batch, "turns": len(turns),
            "first_ratio_dev": max(r["train/first_ratio_dev"] for r in history)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--online-steps", type=int, default=3)
    parser.add_argument("--base-conversations", type=int, default=TrainConfig.base_conversations,
                        help="the embedded base's recipe (CI's short form builds a tiny one)")
    parser.add_argument("--base-steps", type=int, default=TrainConfig.base_steps)
    parser.add_argument("--save", type=Path, default=None, help="write the rates, ratios, machine and versions to this JSON file")
    parser.add_argument("--no-targets", action="store_true",
                        help="print every ratio without enforcing the targets (CI's short form: a few steps time nothing)")
    args = parser.parse_args()
    config = TrainConfig(mode="offline", eval_personas=0, progress=False, batch_size=args.batch_size, n_conversations=400,
                         base_conversations=args.base_conversations, base_steps=args.base_steps)
    base = embedded_base(config.domain, config.base_conversations, config.base_steps, config.base_seed, progress=True)
    from ppg_nb.results import versions
    measured_with = versions()  # at the start: the code that runs, whatever is edited while it does
    print(f"embedded base {base.name}; offline: {args.steps} steps of batch {args.batch_size}; {torch.get_num_threads()} threads; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    best = {"train": 0.0, "bare loop": 0.0, "SFTTrainer": 0.0}
    for r in range(args.rounds):
        rates = {"train": ours(config, args.steps), "bare loop": bare_loop(base, config, args.steps),
                 "SFTTrainer": sft_trainer(base, config, args.steps)}
        best = {k: max(best[k], v) for k, v in rates.items()}
        print(f"round {r}: " + "   ".join(f"{k} {v:7.0f} tok/s" for k, v in rates.items()))
    ratios = {"train / bare loop": best["train"] / best["bare loop"], "train / SFTTrainer": best["train"] / best["SFTTrainer"]}
    print("best:    " + "   ".join(f"{k} {v:7.0f} tok/s" for k, v in best.items()))
    on = online(base, config, args.online_steps, args.rounds)
    total = sum(on["split"].values())
    print(f"online: {on['steps']} steps of {on['rollouts']} rollouts: " +
          ", ".join(f"{k} {v:.1f} s ({v / total:.0%})" for k, v in on["split"].items()) +
          f"; first_ratio_dev <= {on['first_ratio_dev']:.1e}")
    print(f"online generation ({on['turns']} batches of prompts the rollouts read, best of {args.rounds}): LineSampler "
          f"{on['LineSampler']:.0f} tok/s, sample_lines {on['sample_lines']:.0f} tok/s, bare generate {on['bare']:.0f} tok/s")
    ratios["sample_lines / bare generate"] = on["sample_lines"] / on["bare"]
    ratios["LineSampler / bare generate"] = on["LineSampler"] / on["bare"]
    missed = []
    for name, value in ratios.items():
        ok = value >= TARGETS[name]
        if not ok: missed.append(name)
        verdict = "not enforced" if args.no_targets else "ok" if ok else "MISSED"
        print(f"{name:<36} {value:6.3f}   target >= {TARGETS[name]:.2f}: {verdict}")
    if args.save:
        machine = cpu_description()
        args.save.write_text(json.dumps({
            "command": "python tests/benchmarks/bench_train_throughput.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"), "cpu": machine["cpu"], "avx512_bf16": machine["avx512_bf16"], "threads": torch.get_num_threads(),
            "versions": measured_with, "offline_tok_per_s": best, "online_split_s": on["split"],
            "online_generation_tok_per_s": {k: on[k] for k in ("LineSampler", "sample_lines", "bare")},
            "ratios": ratios, "targets": TARGETS, "missed": missed}, indent=1))
        print(f"wrote {args.save}")
    if missed and not args.no_targets: sys.exit(f"MISSED: {', '.join(missed)}")


if __name__ == "__main__":
    main()
