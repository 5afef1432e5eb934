"""Benchmark: rollouts on a vLLM server against Hugging Face `generate` (not a pytest test).

The same online rollout as a training step samples it: SmolLM2-135M-Instruct with a LoRA adapter writes every agent line of
`--batch` logged conversations of `--turns` agent turns (the synthetic education domain's, as `replay_logged` plays them),
`--max-new-tokens` per line, float32. Once with HF `generate` in this process, once on a vLLM server (started from
$PPG_VLLM_PYTHON or .venv-vllm, or `--engine-url`), the adapter loaded into it; `--repeats` times each, alternating, so a
busy machine slows both alike; each after an untimed warm-up. Prints the median rollout time of each and their ratio, and the mean and max |difference|
between the log-probs the engine returned and the trainer's forward pass over the same tokens.
Targets: vLLM's rollout time at most 1/3 of HF's; mean |log-prob difference| at most 1e-4. Exits non-zero on a miss.

`--variants own-kernels three-processes` also times the same rollouts on a server with vLLM's own LoRA kernels (ppg_nb's
plugin, nbs/08f_vllm_lora.ipynb, turned off by VLLM_PLUGINS="") and on one in vLLM's three processes (VLLMServer runs one
where no GPU is visible), each printed beside the default.

Run:  python tests/benchmarks/bench_vllm_rollout.py [--batch 8] [--turns 5] [--max-new-tokens 48] [--repeats 2] [--variants ...]
          [--save FILE.json]
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ppg_nb.engine import EngineSampler, VLLMServer
from ppg_nb.model import add_lora, load_model, model_logprobs, model_path
from ppg_nb.personas import make_dataset
from ppg_nb.results import versions
from ppg_nb.vllm_lora import LOG_LINE
from ppg_nb.rollout import replay_logged, stop_ids

MODEL, MAX_RATIO, MAX_LOGPROB_DIFF = "smollm2-135m-instruct", 1 / 3, 1e-4


def logprob_difference(model, examples) -> tuple[float, float]:
    "Mean and max |sampled - recomputed| log-prob over the agent's tokens of `examples`."
    diffs = []
    with torch.no_grad():
        for e in examples:
            ids, agent = torch.tensor([e.input_ids]), torch.tensor([e.turn_of_token[1:]]) >= 0
            again = model_logprobs(model, ids, None, agent)[0][agent]
            diffs.append((again - torch.tensor([e.sampled_logprobs[1:]])[agent]).abs())
    d = torch.cat(diffs)
    return float(d.mean()), float(d.max())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engine-url", default=None, help="a vLLM server you started (with --enable-lora); default: start one")
    parser.add_argument("--variants", nargs="*", default=[], choices=["own-kernels", "three-processes"],
                        help="also time the rollouts on a server with vLLM's own LoRA kernels (ppg_nb's plugin off) or in vLLM's "
                             "three processes (API server, engine, worker), each printed beside")
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    model, tok = load_model(MODEL)
    model = add_lora(model, r=16)
    torch.manual_seed(0)
    for name, p in model.named_parameters():                            # an adapter that moves the model (B = 0 would not)
        if "lora_B" in name: p.data.normal_(0, 0.02)
    convs = make_dataset("education", args.batch, args.turns, seed=11)
    def warm_up(sampler):                                                # first calls pay one-time costs: not timed
        replay_logged(model, tok, convs[:2], 1.0, 4, seed=99, batch_size=2, sampler=sampler)

    def status(message): print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    def start_server(variant=None):
        server = VLLMServer(model_path(MODEL), lora_rank=16, max_model_len=4096, single_process=variant != "three-processes")
        if variant == "own-kernels": server.env["VLLM_PLUGINS"] = ""     # an empty allowlist: ppg_nb's plugin does not load
        status(f"starting a vLLM server ({variant or 'default'}; half a minute or more; log {server.log_path})")
        started = time.time()
        return server.start(), time.time() - started

    def engine_on(url, adapter):
        "A sampler on the server at `url` with `adapter` loaded, past its warm-up."
        engine = EngineSampler(url, stop_ids(model, tok), max_new_tokens=args.max_new_tokens)
        engine.load_adapter(adapter, "bench")
        warm_up(engine)
        return engine

    def timed(kind, sampler, r):
        status(f"rollout {r + 1}/{args.repeats}: {kind}")
        t0 = time.perf_counter()
        _, examples = replay_logged(model, tok, convs, 1.0, args.max_new_tokens, seed=r, batch_size=args.batch, sampler=sampler)
        times.setdefault(kind, []).append(time.perf_counter() - t0)
        tokens.setdefault(kind, []).append(sum(sum(t >= 0 for t in e.turn_of_token) for e in examples))
        return examples

    server, startup = start_server() if not args.engine_url else (None, None)
    times, tokens = {}, {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(f"{tmp}/adapter", safe_serialization=True)
            warm_up(None)
            engine = engine_on(args.engine_url or server.url, f"{tmp}/adapter")
            for r in range(args.repeats):
                timed("hf", None, r)
                examples = timed("vllm", engine, r)
                if r == 0: mean_diff, max_diff = logprob_difference(model, examples)
            plugin = (LOG_LINE in server.log_path.read_text()) if server else None   # ppg_nb's LoRA kernels (nbs/08f) or vLLM's
            engine.close()
            for variant in args.variants:                                 # the same rollouts on another server, beside
                server.stop()
                server, _ = start_server(variant)
                assert (LOG_LINE in server.log_path.read_text()) == (variant != "own-kernels")
                engine = engine_on(server.url, f"{tmp}/adapter")
                for r in range(args.repeats): timed(f"vllm {variant}", engine, r)
                engine.close()
    finally:
        if server: server.stop()
    hf, vllm = statistics.median(times["hf"]), statistics.median(times["vllm"])
    ratio = vllm / hf
    print(f"{args.batch} conversations x {args.turns} agent turns, <= {args.max_new_tokens} new tokens a line, float32, "
          f"{args.repeats} repeats" + (f"; server start {startup:.0f} s" if startup else "")
          + {True: "; LoRA kernels: ppg_nb.vllm_lora's", False: "; LoRA kernels: vLLM's own", None: ""}[plugin])
    print(f"{'':<24}{'rollout':>10}{'agent tokens':>14}{'tokens/s':>10}")
    for kind in times:
        t, n = statistics.median(times[kind]), statistics.median(tokens[kind])
        print(f"{'HF generate' if kind == 'hf' else 'vLLM' if kind == 'vllm' else kind:<24}{t:>9.1f}s{n:>14.0f}{n / t:>10.0f}"
              + (f"   vLLM default / this: {vllm / t:.3f}" if kind.startswith("vllm ") else ""))
    print(f"vLLM / HF rollout time: {ratio:.3f}   target <= {MAX_RATIO:.3f}: {'ok' if ratio <= MAX_RATIO else 'MISSED'}")
    print(f"log-probs, engine vs trainer: mean |diff| {mean_diff:.2e}, max {max_diff:.2e}   target mean <= {MAX_LOGPROB_DIFF:.0e}: "
          f"{'ok' if mean_diff <= MAX_LOGPROB_DIFF else 'MISSED'}")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(dict(command=" ".join(["python", *sys.argv]), batch=args.batch, turns=args.turns,
                                             max_new_tokens=args.max_new_tokens, hf_s=times["hf"], vllm_s=times["vllm"],
                                             variants_s={k: v for k, v in times.items() if k.startswith("vllm ")},
                                             tokens=tokens, ratio=ratio, logprob_mean_diff=mean_diff, logprob_max_diff=max_diff,
                                             server_start_s=startup, lora_plugin=plugin,
                                             versions=versions()), indent=1) + "\n")
    if ratio > MAX_RATIO or mean_diff > MAX_LOGPROB_DIFF:
        sys.exit(f"MISSED: vLLM/HF {ratio:.3f} (target <= {MAX_RATIO:.3f}), mean log-prob diff {mean_diff:.2e} (target <= {MAX_LOGPROB_DIFF:.0e})")


if __name__ == "__main__":
    main()
