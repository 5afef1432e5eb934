"""Benchmark: offline training tokens/s of `ppg_nb.train.train` against a bare PyTorch loop (not a pytest test).

Both run the same LoRA model, on the same micro-batches (`batch_indices` of the same seed), doing the same forward, loss on
the agent tokens, backward, gradient clipping and AdamW step. The bare loop gets its batches already collated and does
nothing else; `train` also collates, computes advantages, logs and drives tqdm. The two are interleaved in rounds so that
both see the same machine load, and the best round of each is compared.  Target: ours >= 90% of the bare loop.

Run:  python tests/benchmarks/bench_train_throughput.py [--steps 20] [--rounds 3] [--batch-size 16]
(uses the embedded base model of the default recipe from the cache; the first run builds it, a few minutes)
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from ppg_nb.model import add_lora, load_model
from ppg_nb.render import collate, conversation_returns, encode_conversations
from ppg_nb.train import TrainConfig, batch_indices, embedded_base, load_data, ppg_loss, token_logprobs, train


def bare_loop(base: Path, config: TrainConfig, steps: int) -> float:
    "Tokens/s of the plainest loop over pre-collated batches."
    model, tok = load_model(str(base))
    model = add_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, seed=config.seed)
    conversations, _ = load_data(config)
    examples, _ = encode_conversations(conversations, tok, config.max_length)
    returns = conversation_returns(conversations, config.policy, **config.policy_params)
    batches = [collate([examples[i] for i in batch_indices(len(examples), config.batch_size, s, config.seed)],
                       tok.pad_token_id, returns) for s in range(steps)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    model.train()
    tokens, start = 0, time.perf_counter()
    for batch in batches:
        mask = batch.turn_of_target >= 0
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = ppg_loss(token_logprobs(logits, batch.input_ids, mask), batch.turn_of_target, batch.turn_returns)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step(); optimizer.zero_grad(set_to_none=True)
        tokens += int(batch.attention_mask.sum())
    return tokens / (time.perf_counter() - start)


def ours(config: TrainConfig, steps: int) -> float:
    "Tokens/s that `train` measures over its loop (model loading and evaluation excluded, as in the bare loop)."
    with tempfile.TemporaryDirectory() as tmp:
        return train(config, output=str(Path(tmp) / "run"), max_steps=steps).tokens_per_s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    config = TrainConfig(mode="offline", eval_personas=0, progress=False, batch_size=args.batch_size, n_conversations=400)
    base = embedded_base(config.domain, config.base_conversations, config.base_steps, config.base_seed, progress=True)
    print(f"embedded base {base.name}; {args.steps} steps of batch {args.batch_size}; {torch.get_num_threads()} threads")
    best_ours, best_bare = 0.0, 0.0
    for r in range(args.rounds):
        a, b = ours(config, args.steps), bare_loop(base, config, args.steps)
        best_ours, best_bare = max(best_ours, a), max(best_bare, b)
        print(f"round {r}: train {a:8.0f} tok/s   bare loop {b:8.0f} tok/s   ratio {a / b:.3f}")
    ratio = best_ours / best_bare
    print(f"best:    train {best_ours:8.0f} tok/s   bare loop {best_bare:8.0f} tok/s   ratio {ratio:.3f}   "
          f"target >= 0.90: {'ok' if ratio >= 0.9 else 'MISSED'}")
    if ratio < 0.9: sys.exit(f"MISSED: train / bare loop = {ratio:.3f} < 0.90")


if __name__ == "__main__":
    main()
