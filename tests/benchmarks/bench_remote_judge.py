"""Benchmark: the remote judge against a local vLLM server (not a pytest test).

Starts a vLLM server with SmolLM2-135M-Instruct (from $PPG_VLLM_PYTHON or .venv-vllm; `make vllm-env`), or uses
`--url`, and judges `--lines` persona lines through `--judge openai:base@URL` as training and `ppg_nb judge eval` do: the
zero-shot question per line, P(YES) from the first answer token's log-probs, `--concurrency` requests in flight. The lines
are those of the synthetic education domain (deterministic, no data needed). Prints the seconds, requests, requests in
flight at most, and how many answers were read from text or not at all (both should be 0 against vLLM).
Targets: the lines judged in under 60 s with at least 8 requests in flight. Exits non-zero on a miss.

Run:  python tests/benchmarks/bench_remote_judge.py [--lines 200] [--concurrency 8] [--url URL] [--save FILE.json]
"""
import argparse
import json
import sys
import time
from pathlib import Path

from ppg_nb.engine import VLLMServer
from ppg_nb.judge import RemoteJudge
from ppg_nb.model import model_path
from ppg_nb.personas import make_dataset
from ppg_nb.results import versions

MODEL, MAX_SECONDS, MIN_IN_FLIGHT = "smollm2-135m-instruct", 60.0, 8


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--url", default=None, help="a running OpenAI-compatible server serving the model as 'base'")
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    turns = 5
    convs = make_dataset("education", -(-args.lines // turns), turns, seed=21)
    server = None if args.url else VLLMServer(model_path(MODEL), max_model_len=2048)
    if server: server.start()
    try:
        judge = RemoteJudge("base", args.url or server.url, concurrency=args.concurrency)
        start = time.perf_counter()
        scores = judge.line_consistency(convs)
        seconds = time.perf_counter() - start
    finally:
        if server: server.stop()
    lines = sum(len(s) for s in scores)
    c = judge.counts
    print(f"{lines} lines judged in {seconds:.1f} s ({lines / seconds:.1f} lines/s): {c['requests']} requests, at most "
          f"{c['max_in_flight']} in flight, {c['retries']} retries; answers read from text {c['from_text']}, unreadable {c['unreadable']}")
    ok = seconds < MAX_SECONDS and c["max_in_flight"] >= MIN_IN_FLIGHT
    print(f"targets: under {MAX_SECONDS:.0f} s, at least {MIN_IN_FLIGHT} in flight: {'ok' if ok else 'MISSED'}")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(dict(command=" ".join(["python", *sys.argv]), lines=lines, seconds=seconds, counts=c,
                                             concurrency=args.concurrency, versions=versions()), indent=1) + "\n")
    if not ok: sys.exit(f"MISSED: {lines} lines in {seconds:.1f} s (target < {MAX_SECONDS:.0f}), {c['max_in_flight']} in flight (target >= {MIN_IN_FLIGHT})")


if __name__ == "__main__":
    main()
