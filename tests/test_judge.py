"""Tests for ppg_nb.judge: the re-exported rule judge and the LLM judge on a tiny model built in code."""
from pathlib import Path
import pytest
import torch

from ppg_nb.data import consistent_llms_dir, Conversation
from ppg_nb.judge import LLMJudge, answer_token_ids, judge_turns, score_conversation, tiny_judge_checkpoint
from ppg_nb.personas import make_dataset
import ppg_nb.personas


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_judge_checkpoint(tmp_path_factory.mktemp("tiny") / "judge", seed=0)


@pytest.fixture(scope="module")
def judge(checkpoint):
    return LLMJudge.from_pretrained(checkpoint, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def convs():
    return make_dataset("therapy", 3, 6, seed=1)


def test_rule_judge_is_reexported():
    assert score_conversation is ppg_nb.personas.score_conversation and judge_turns is ppg_nb.personas.judge_turns


def test_checkpoint_is_safetensors_and_loads(checkpoint, judge):
    assert (checkpoint / "model.safetensors").is_file() and not list(checkpoint.glob("*.bin"))
    assert judge.tokenizer.convert_ids_to_tokens(judge.yes_ids) == ["YES"]
    assert judge.tokenizer.convert_ids_to_tokens(judge.no_ids) == ["NO"]
    assert not judge.model.training


def test_prob_yes_is_the_two_way_softmax_of_the_logits(judge, convs):
    text = "You check whether a speaker stays in character. Persona: I am 30 years old. Line: I am 31 years old. Answer YES or NO."
    ids = torch.tensor([judge.tokenizer(text)["input_ids"]])
    with torch.no_grad(): logits = judge.model(input_ids=ids).logits[0, -1].double()
    expected = torch.sigmoid(logits[judge.yes_ids[0]] - logits[judge.no_ids[0]])
    assert judge.prob_yes([text])[0].item() == pytest.approx(expected.item(), abs=1e-6)


def test_batching_padding_and_determinism(judge):
    prompts = ["NO", "Answer YES or NO.", "You check whether a speaker contradicts themselves. " * 6 + "Answer YES or NO.",
               "I am 19 years old. I love drawing. Does this line contradict the persona?"] * 2
    alone = torch.cat([judge.prob_yes([p]) for p in prompts])
    for bs in (1, 3, 8):
        j = LLMJudge(judge.model, judge.tokenizer, batch_size=bs)
        assert torch.allclose(j.prob_yes(prompts), alone, atol=1e-5)
    judge.tokenizer.padding_side = "right"
    try: assert torch.allclose(judge.prob_yes(prompts), alone, atol=1e-5)
    finally: judge.tokenizer.padding_side = "left"
    assert torch.equal(judge.prob_yes(prompts), judge.prob_yes(prompts))
    assert judge.prob_yes([]).shape == (0,)


def test_score_shapes_ranges_and_window(judge, convs):
    scores = judge.score(convs, prompt_weight=0.5, window=2)
    assert [len(s) for s in scores] == [6, 6, 6] and all(0 <= r <= 1 for s in scores for r in s)
    parts = judge.judge(convs, window=2)
    assert all(d["line"][0] == 1.0 for d in parts)  # the first turn has no earlier line
    only_prompt = judge.score(convs, prompt_weight=1.0, window=2)
    assert all(a == pytest.approx(b, abs=1e-6) for s, d in zip(only_prompt, parts) for a, b in zip(s, d["prompt"]))
    scored = judge.score_into(convs[:1])
    assert isinstance(scored[0], Conversation) and len(scored[0].rewards) == 6 and convs[0].rewards != scored[0].rewards
    assert scored[0].meta["llm_judge"] == {"prompt_weight": 0.5, "window": None}


def test_chat_template_path(tmp_path, convs):
    j = LLMJudge.from_pretrained(tiny_judge_checkpoint(tmp_path / "chat", chat_template=True), device="cpu")
    assert j.chat_template
    assert len(j.score(convs[:2])[1]) == 6
    j2 = LLMJudge(j.model, j.tokenizer, chat_template=False)
    assert not j2.chat_template


def test_bad_input(judge, convs):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"): LLMJudge(judge.model, judge.tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="no single token for 'MAYBE'"): answer_token_ids(judge.tokenizer, "MAYBE")
    with pytest.raises(ValueError, match="share a token"): LLMJudge(judge.model, judge.tokenizer, yes="NO", no="NO")
    with pytest.raises(ValueError, match="prompts must be a list of strings"): judge.prob_yes("a prompt")
    with pytest.raises(ValueError, match="prompt_weight must be a number in \\[0, 1\\]"): judge.score(convs, prompt_weight=-1)
    with pytest.raises(ValueError, match="window must be an integer >= 1 or None"): judge.score(convs, window=0)
    with pytest.raises(ValueError, match="not a Conversation"): judge.score([None])


DATA = consistent_llms_dir(required=False)  # $PPG_DATA: the Consistent-LLMs files (not shipped; `make test` sets it when they sit beside the repository)


@pytest.mark.skipif(DATA is None, reason="PPG_DATA is not set: the Consistent-LLMs files are not shipped")
@pytest.mark.slow  # tens of seconds: `make test-slow` (run by .ci/run after the README's test command)
def test_judge_eval_with_the_real_smollm2_model(tmp_path, cache_env):
    "`ppg_nb judge eval --judge zero-shot:smollm2-135m-instruct`: the zero-shot baseline against the 70B judge's labels."
    import json, subprocess, sys
    out = tmp_path / "agreement.json"
    cmd = [sys.executable, "-m", "ppg_nb", "judge", "eval", "--judge", "zero-shot:smollm2-135m-instruct",
           "--data", str(DATA / "education_sample.json"), "--max-lines", "12", "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cache_env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert saved["n_lines"] == 12 and 0 <= saved["auc"] <= 1 and 0.5 <= saved["majority_accuracy"] <= 1
    assert saved["versions"]["transformers"]


def test_judge_train_then_eval_through_the_cli(tmp_path, checkpoint):
    "`ppg_nb judge train` on a tiny backbone writes a judge folder and the held-out personas; `judge eval` reads both."
    import json, subprocess, sys
    from ppg_nb.data import save_conversations
    from ppg_nb.personas import make_dataset
    data = save_conversations(make_dataset("education", 12, 4, seed=5), tmp_path / "labelled.jsonl")
    run = lambda *a: subprocess.run([sys.executable, "-m", "ppg_nb", "judge", *a], capture_output=True, text=True, timeout=600)
    done = run("train", "--base-model", str(checkpoint), "--data", str(data), "--output", str(tmp_path / "judge"),
               "--hold-out", "0.25", "--epochs", "1", "--batch-size", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "judge" / "judge.json").read_text())
    assert meta["base_model"] == str(checkpoint) and meta["kind"] == "classifier" and meta["sources"] == [str(data)]
    assert (tmp_path / "judge" / "adapter_model.safetensors").exists() and not list((tmp_path / "judge").glob("*.bin"))
    held = tmp_path / "judge" / "held_out.jsonl"
    done = run("eval", "--judge", str(tmp_path / "judge"), "--data", str(held), "--output", str(tmp_path / "agree.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    agree = json.loads((tmp_path / "agree.json").read_text())
    assert agree["n_lines"] == 4 * len(held.read_text().splitlines()) and agree["judge"] == str(tmp_path / "judge")
    assert agree["accuracy"] >= 0 and agree["majority_accuracy"] >= 0.5
    bad = run("eval", "--judge", str(checkpoint), "--data", str(held), "--output", str(tmp_path / "x.json"))
    assert bad.returncode != 0 and f"judge {str(checkpoint)!r} has no judge.json" in bad.stderr
    assert not (tmp_path / "x.json").exists()


def test_a_remote_judge_scores_judge_eval_and_online_training(tmp_path, base_dir, monkeypatch):
    "`--judge openai:MODEL@URL` against a stand-in OpenAI-compatible server on 127.0.0.1: `judge eval` measures it against "
    "the stored labels, and an online step is rewarded by it (the requests and their tokens counted in log.jsonl)."
    import json
    from ppg_nb.cli import main
    from ppg_nb.data import save_conversations
    from ppg_nb.judge import FakeChatServer
    server = FakeChatServer(p_yes=lambda prompt: 0.8 if "invented" in prompt else 0.1)
    try:
        monkeypatch.setenv("PPG_NB_JUDGE_API_KEY", "sk-never-logged")
        data = save_conversations(make_dataset("education", 6, 4, seed=3), tmp_path / "labelled.jsonl")
        spec = f"openai:judge-model@{server.url}"
        assert main(["judge", "eval", "--judge", spec, "--data", str(data), "--output", str(tmp_path / "agree.json")]) == 0
        agree = json.loads((tmp_path / "agree.json").read_text())
        assert agree["judge"] == spec and agree["n_lines"] == 24 and 0 <= agree["auc"] <= 1
        asked = len(server.requests)
        assert asked > 0 and all(h["Authorization"] == "Bearer sk-never-logged" for _, h, _ in server.requests)
        assert main(["train", "--base-conversations", "48", "--base-steps", "4", "--judge", spec, "--max-steps", "1",
                     "--online-batch", "2", "--batch-size", "2", "--n-turns", "3", "--eval-personas", "0", "--no-progress",
                     "--output", str(tmp_path / "run")]) == 0
        log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
        step = next(r for r in log if "train/loss" in r)
        assert step["judge/requests"] == len(server.requests) - asked > 0 and step["judge/prompt_tokens"] == 10 * step["judge/requests"]
        assert "sk-never-logged" not in (tmp_path / "run" / "log.jsonl").read_text() + (tmp_path / "run" / "config.json").read_text()
    finally: server.close()


def test_a_remote_judge_that_is_down_is_one_line_naming_the_url(tmp_path, capsys):
    from ppg_nb.cli import main
    from ppg_nb.data import save_conversations
    data = save_conversations(make_dataset("education", 2, 3, seed=3), tmp_path / "labelled.jsonl")
    spec = "openai:judge-model@http://127.0.0.1:9/v1"                      # port 9 (discard): nothing listens
    assert main(["judge", "eval", "--judge", spec, "--data", str(data), "--output", str(tmp_path / "agree.json")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]           # beside it: the status line of the judging
    assert len(errors) == 1 and errors[0].startswith("ppg_nb judge: error: --judge server http://127.0.0.1:9/v1/chat/completions "
                                                     "is not reachable"), err
    assert "Traceback" not in err
    assert not (tmp_path / "agree.json").exists()
