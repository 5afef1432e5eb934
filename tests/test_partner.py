"""A remote partner (`--partner openai:MODEL[@URL]`): the model trains online against an LLM served over an OpenAI-compatible API."""
import json

from ppg_nb.personas import make_dataset


def test_online_training_against_a_remote_partner_scored_by_a_remote_judge(tmp_path, base_dir, monkeypatch):
    "The stand-in server plays the partner from each logged opening and judges the model's lines; both are counted in log.jsonl."
    from ppg_nb.cli import main
    from ppg_nb.data import save_conversations
    from ppg_nb.judge import FakeChatServer
    server = FakeChatServer(p_yes=lambda prompt: 0.7, reply=lambda messages: "What is your name?")
    try:
        monkeypatch.setenv("PPG_NB_PARTNER_API_KEY", "sk-partner-never-logged")
        data = save_conversations(make_dataset("education", 4, 3, seed=3), tmp_path / "logged.jsonl")
        spec = f"openai:served-model@{server.url}"
        assert main(["train", "--base-conversations", "48", "--base-steps", "4", "--mode", "online", "--data", str(data),
                     "--partner", spec, "--judge", spec, "--n-turns", "3", "--max-steps", "1", "--online-batch", "2",
                     "--batch-size", "2", "--eval-personas", "0", "--no-progress", "--output", str(tmp_path / "run")]) == 0
        step = next(r for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines()) if "train/loss" in r)
        assert step["partner/requests"] == 2 * 2                  # 2 conversations; the logged opening, then 2 partner lines each
        assert step["train/first_ratio_dev"] <= 1e-4              # the loss starts from the sampled tokens' own log-probs
        partner_asks = [(h, b) for _, h, b in server.requests if "logprobs" not in b]
        assert len(partner_asks) == 4 and all(b["messages"][-1]["role"] == "user" for _, b in partner_asks)
        assert step["judge/requests"] == len(server.requests) - len(partner_asks) > 0   # the rest: the judge's questions
        assert all(h["Authorization"] == "Bearer sk-partner-never-logged" for h, _ in partner_asks)
        result = json.loads((tmp_path / "run" / "result.json").read_text())
        assert result["data"].startswith(f"rollouts against the partner {spec}")
        saved = (tmp_path / "run" / "log.jsonl").read_text() + (tmp_path / "run" / "config.json").read_text()
        assert "sk-partner-never-logged" not in saved
    finally: server.close()


def test_a_remote_partner_needs_data_and_online_mode():
    import pytest
    from ppg_nb.train import TrainConfig
    with pytest.raises(ValueError, match="answers the model from the openings of `data` online"):
        TrainConfig(partner="openai:m@http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="partner must be 'simulator', 'logged' or 'openai:MODEL"):
        TrainConfig(partner="openai:")


def test_a_server_that_fails_mid_run_leaves_a_checkpoint_and_the_resumed_run_loses_nothing(tmp_path, base_dir, monkeypatch):
    "The judge's server stops after step 1: the run checkpoints at step 1 and stops naming the URL; resumed once the server is back "
    "(same address), steps 2 and 3 are those of an uninterrupted run, bit for bit."
    import pytest
    import ppg_nb.judge
    from ppg_nb.judge import FakeChatServer, RemoteError
    from ppg_nb.train import train
    monkeypatch.setattr(ppg_nb.judge.time, "sleep", lambda seconds: None)     # the retries' backoff, not waited for here
    p_yes = lambda prompt: 0.8 if "invented" in prompt else 0.3
    server = FakeChatServer(p_yes=p_yes)
    port, spec = server.httpd.server_address[1], f"openai:judge-model@{server.url}"
    common = dict(base_conversations=48, base_steps=4, judge=spec, n_turns=3, online_batch=2, batch_size=2, max_steps=3,
                  eval_personas=0, progress=False)
    losses = lambda result: [(r["step"], r["train/loss"]) for r in result.history if "train/loss" in r]
    try:
        whole = train(**common, output=str(tmp_path / "whole"))
        def stop_after_first(step, record):
            if step == 1: server.close()
        with pytest.raises(RemoteError, match=f"judge server {server.url}/chat/completions is not reachable"):
            train(**common, output=str(tmp_path / "cut"), callback=stop_after_first)
    finally: server.close()
    (checkpoint,) = (tmp_path / "cut" / "checkpoints").iterdir()
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 1
    back = FakeChatServer(p_yes=p_yes, port=port)
    try: resumed = train(**common, output=str(tmp_path / "cut"), resume_from=str(tmp_path / "cut"))
    finally: back.close()
    assert losses(resumed) == losses(whole) and len(losses(whole)) == 3


def test_the_vllm_engine_without_its_environment_is_refused_before_any_model_loads(tmp_path, monkeypatch, capsys):
    from ppg_nb.cli import main
    monkeypatch.setenv("PPG_VLLM_PYTHON", str(tmp_path / "no-such-venv" / "bin" / "python"))
    assert main(["train", "--rollout-engine", "vllm", "--max-steps", "1", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "make vllm-env" in err and "no-such-venv" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
