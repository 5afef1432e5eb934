"""The trainer: results on disk, exact resume, bad input refused before heavy compute, online/PPO, accelerate DDP on CPU.

Everything runs on a tiny base model built once per session in a temporary cache (the empty-cache path), with a few steps.
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ppg_nb.data import consistent_llms_dir, Conversation, save_conversations
from ppg_nb.personas import make_dataset

TINY = dict(mode="offline", n_conversations=24, n_turns=3, max_length=256, batch_size=4, eval_personas=0, lora_r=4, lora_alpha=8,
            progress=False, base_conversations=48, base_steps=4)


def _config(tmp_path, name="run", **kw):
    from ppg_nb.train import TrainConfig
    return TrainConfig(**{**TINY, "output": str(tmp_path / name), **kw})


def _adapter(run: Path) -> dict:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def test_train_writes_result_adapter_and_log(tmp_path, base_dir):
    from ppg_nb.train import train
    result = train(_config(tmp_path, max_steps=3, eval_personas=2, save_every=2))
    out = tmp_path / "run"
    saved = json.loads((out / "result.json").read_text())
    for key in ("pc_before", "pc_after", "policy", "K", "config"):
        assert key in saved
    assert saved["policy"] == "kstep" and saved["K"] == 2 and saved["config"]["max_steps"] == 3
    assert 0 <= saved["pc_before"] <= 1 and 0 <= saved["pc_after"] <= 1
    assert saved["base_model"] == str(base_dir)
    assert any("lora_A" in k for k in _adapter(out))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["train/tokens_per_s"] > 0 for r in log)
    # save_every=2 and the end: checkpoints after steps 2 and 3, each with the adapter and no full weights
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1"]
    assert [json.loads((out / "checkpoints" / c / "state.json").read_text())["step"] for c in ("checkpoint_0", "checkpoint_1")] == [2, 3]
    assert not list((out / "checkpoints").glob("*/model*.safetensors"))
    assert result.steps == 3 and result.pc_after == saved["pc_after"]


def test_resume_is_bit_exact(tmp_path, base_dir):
    "An interrupted run resumed from its checkpoint ends with the same weights as an uninterrupted one (CPU)."
    from ppg_nb.train import train
    kw = dict(max_steps=5, lora_dropout=0.1, baseline="running", schedule="cosine", warmup_steps=1, grad_accum=2)
    train(_config(tmp_path, "whole", **kw))

    def stop_at_2(step, record):
        if step == 2: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, "cut", **kw), callback=stop_at_2)
    assert json.loads((tmp_path / "cut" / "checkpoints" / "checkpoint_0" / "state.json").read_text())["step"] == 2
    assert not (tmp_path / "cut" / "result.json").exists()
    train(_config(tmp_path, "cut", resume_from=str(tmp_path / "cut"), **kw))
    whole, cut = _adapter(tmp_path / "whole"), _adapter(tmp_path / "cut")
    assert whole.keys() == cut.keys()
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    # the log of the resumed run has each step once
    log = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5]
    # and it differs from the base: training did something
    assert any(v.abs().sum() > 0 for k, v in whole.items() if "lora_B" in k)


def test_resume_refuses_a_changed_config(tmp_path, base_dir):
    from ppg_nb.train import train
    train(_config(tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="config differs in K"):
        train(_config(tmp_path, resume_from=str(tmp_path / "run"), max_steps=2, K=3))


@pytest.fixture
def no_heavy_compute(monkeypatch):
    "Make loading or building a model fail loudly: bad input must be refused before."
    import ppg_nb.train as T
    def heavy(*a, **k): raise AssertionError("heavy compute started before the bad input was refused")
    monkeypatch.setattr(T, "load_model", heavy)
    monkeypatch.setattr(T, "embedded_base", heavy)


def test_bad_input_is_refused_before_heavy_compute(tmp_path, base_dir, no_heavy_compute):
    from ppg_nb.train import TrainConfig, train
    with pytest.raises(ValueError, match="unknown policy 'kstepp'"): TrainConfig(policy="kstepp")
    with pytest.raises(ValueError, match="K must be an integer >= 1"): TrainConfig(K=0)
    good = make_dataset("education", 3, 2, seed=0)
    no_agent = Conversation(persona=good[0].persona, scenario="", role="Student", turns=[("Teacher", "Hello.")],
                            agent_turns=[])
    save_conversations(good + [no_agent], tmp_path / "no_agent.jsonl")
    with pytest.raises(ValueError, match=r"no_agent.jsonl record 3: field 'agent_turns' is empty"):
        train(_config(tmp_path, "a", data=str(tmp_path / "no_agent.jsonl")))
    unscored = [Conversation(**{**good[0].__dict__, "rewards": []})]
    save_conversations(good + unscored, tmp_path / "unscored.jsonl")
    with pytest.raises(ValueError, match=r"record 3: field 'rewards' has 0 values for 2 agent turns"):
        train(_config(tmp_path, "b", data=str(tmp_path / "unscored.jsonl")))
    lines = (tmp_path / "unscored.jsonl").read_text().splitlines()
    bad = json.loads(lines[0]); bad["rewards"] = [0.5]
    (tmp_path / "mismatch.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"mismatch.jsonl line 1.*rewards"):
        train(_config(tmp_path, "c", data=str(tmp_path / "mismatch.jsonl")))
    # model directories without a tokenizer or without a chat template
    (tmp_path / "m1").mkdir(); shutil.copy(base_dir / "config.json", tmp_path / "m1")
    with pytest.raises(ValueError, match="has no tokenizer"): _config(tmp_path, model=str(tmp_path / "m1"))
    shutil.copytree(base_dir, tmp_path / "m2"); (tmp_path / "m2" / "chat_template.jinja").unlink()
    cfg = json.loads((tmp_path / "m2" / "tokenizer_config.json").read_text()); cfg.pop("chat_template", None)
    (tmp_path / "m2" / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="has no chat template"): _config(tmp_path, model=str(tmp_path / "m2"))
    # an output directory that holds another run
    (tmp_path / "taken").mkdir(); (tmp_path / "taken" / "result.json").write_text("{}")
    with pytest.raises(ValueError, match="holds another run"): train(_config(tmp_path, "taken"))


def test_online_ppo_step(tmp_path, base_dir):
    from ppg_nb.train import train
    result = train(_config(tmp_path, mode="online", policy="full", clip=0.2, ppo_epochs=2, online_batch=4, n_turns=2,
                           max_steps=2, max_new_tokens=16))
    assert [r["step"] for r in result.history] == [1, 2]
    assert all(0 <= r["train/rollout_pc"] <= 1 for r in result.history)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["policy"] == "full" and saved["K"] is None and saved["config"]["clip"] == 0.2
    # the loss and the PPO ratio read the sampled tokens with their sampling log-probs: ratio 1 before any update
    assert all(r["train/first_ratio_dev"] <= 1e-4 for r in result.history)
    assert all(r["train/max_ratio_dev"] >= r["train/first_ratio_dev"] for r in result.history)


def test_ppo_with_critic_and_kl_logs_them_and_resumes_exactly(tmp_path, base_dir, monkeypatch):
    "baseline='value' and kl_coef: the critic fits, the KL to the base model is logged, and a cut run resumes bit-exactly (CPU)."
    import ppg_nb.train as T
    from ppg_nb.train import train
    class LengthJudge:  # the 4-step base model earns no rule-judge reward: score lines by their length
        def score_into(self, convs):
            return [dataclasses.replace(c, rewards=[(len(c.turns[i][1]) % 5) / 4 for i in c.agent_turns]) for c in convs]
    monkeypatch.setattr(T, "load_judge", lambda spec, device=None: LengthJudge())   # the judge is phase 2 of the step
    kw = dict(mode="online", policy="full", clip=0.2, ppo_epochs=2, baseline="value", kl_coef=0.05, online_batch=4, n_turns=2,
              max_steps=3, max_new_tokens=12, batch_size=2)
    whole = train(_config(tmp_path, "whole", **kw))
    log = whole.history
    assert all(r["train/kl"] >= 0 and r["train/value_loss"] >= 0 for r in log)
    assert all(0 < r["train/kl"] < 1 for r in log)                             # the policy leaves the reference (LoRA off), a little
    assert log[0]["train/value_mean"] == 0.0 and log[-1]["train/value_mean"] != 0.0   # V = 0 at first, then fitted
    state = json.loads((tmp_path / "whole" / "checkpoints" / "checkpoint_0" / "state.json").read_text())
    assert set(state["value_head"]) == {"linear.weight", "linear.bias"}

    def stop_at_1(step, record):
        if step == 1: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, "cut", **kw), callback=stop_at_1)
    resumed = train(_config(tmp_path, "cut", resume_from=str(tmp_path / "cut"), **kw))
    assert [r["train/value_loss"] for r in resumed.history] == [r["train/value_loss"] for r in log]
    a, b = _adapter(tmp_path / "whole"), _adapter(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    cut_state = json.loads((tmp_path / "cut" / "checkpoints" / "checkpoint_1" / "state.json").read_text())
    assert cut_state["value_head"] == json.loads((tmp_path / "whole" / "checkpoints" / "checkpoint_0" / "state.json").read_text())["value_head"]


def test_critic_and_kl_are_refused_offline():
    from ppg_nb.train import TrainConfig
    with pytest.raises(ValueError, match="baseline='value' learns V"): TrainConfig(mode="offline", baseline="value")
    with pytest.raises(ValueError, match="kl_coef .* needs mode='online'"): TrainConfig(mode="offline", kl_coef=0.1)
    with pytest.raises(ValueError, match="kl_coef must be a number"): TrainConfig(kl_coef=-1)


def test_online_rollouts_are_what_the_loss_reads(base_dir):
    "Every agent token of an online rollout is a sampled token, and a forward pass over the ids gives back its log-prob."
    from ppg_nb.rollout import rollout
    from ppg_nb.model import load_model
    from ppg_nb.personas import sample_personas
    from ppg_nb.render import collate
    from ppg_nb.model import token_logprobs
    model, tok = load_model(str(base_dir))
    torch.manual_seed(0)
    convs, examples = rollout(model, tok, "education", sample_personas("education", 6, seed=3), 3, seed=3, max_new_tokens=16)
    batch = collate(examples, tok.pad_token_id)
    mask = batch.turn_of_target >= 0
    with torch.no_grad():
        lp = token_logprobs(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.input_ids, mask)
    assert (lp[mask] - batch.sampled_logprobs[mask]).abs().max() < 1e-4
    assert (batch.sampled_logprobs[~mask] == 0).all() and (batch.sampled_logprobs[mask] < 0).all()


def test_online_replaying_logged_partner_lines(tmp_path, base_dir):
    "partner='logged': each step replays logged conversations, the model writes every agent line, the judge scores them."
    from ppg_nb.train import train
    data = save_conversations(make_dataset("education", 6, 3, seed=8), tmp_path / "logged.jsonl")
    result = train(_config(tmp_path, mode="online", data=str(data), partner="logged", judge="rule", online_batch=4, n_turns=3,
                           max_steps=2, max_new_tokens=12))
    assert [r["step"] for r in result.history] == [1, 2]
    assert all(0 <= r["train/rollout_pc"] <= 1 and r["train/generated_tokens"] > 0 for r in result.history)
    assert all(r["train/first_ratio_dev"] <= 1e-4 for r in result.history)   # the loss reads the sampled tokens


def test_a_model_judge_scores_online_rollouts_and_the_judged_pc(tmp_path, base_dir):
    "judge='zero-shot:MODEL': it, not the rule judge, rewards the online rollouts, and it judges PC on replayed eval_data."
    from ppg_nb.judge import tiny_judge_checkpoint
    from ppg_nb.train import train
    data = save_conversations(make_dataset("education", 4, 2, seed=9), tmp_path / "logged.jsonl")
    judge_dir = tiny_judge_checkpoint(tmp_path / "judge")
    result = train(_config(tmp_path, mode="online", data=str(data), eval_data=str(data), partner="logged", judge=f"zero-shot:{judge_dir}",
                           online_batch=2, n_turns=2, max_steps=1, max_new_tokens=8))
    assert result.pc_before is not None and result.pc_after is not None and len(result.pc_by_turn_before) == 2
    assert result.label_shift["n_lines"] == 8
    rollout_pc = result.history[0]["train/rollout_pc"]
    assert 0 < rollout_pc < 1 and rollout_pc not in (0.0, 0.5, 1.0)        # a random judge's P(NO)s, not the rule judge's grades


def test_partner_and_judge_are_checked_before_training(tmp_path):
    from ppg_nb.train import TrainConfig
    data = save_conversations(make_dataset("education", 2, 2, seed=1), tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match="partner='logged' replays the partner lines of `data` online"):
        TrainConfig(mode="online", partner="logged")
    with pytest.raises(ValueError, match=r"partner must be 'simulator', 'logged' or 'openai:MODEL\[@URL\]'"): TrainConfig(partner="human")
    with pytest.raises(ValueError, match=r"judge must be 'rule', 'zero-shot:MODEL', 'openai:MODEL\[@URL\]' or a folder"): TrainConfig(judge=str(tmp_path))
    with pytest.raises(ValueError, match="use mode='offline', or partner='logged'"): TrainConfig(mode="online", data=str(data))
    assert TrainConfig(mode="online", data=str(data), partner="logged").resolved_mode == "online"


@pytest.mark.slow  # tens of seconds: `make test-slow` (run by .ci/run after the README's test command)
def test_accelerate_two_cpu_processes(tmp_path, base_dir):
    "Two CPU processes under `accelerate launch` (DDP, gloo) train and write one result."
    env = {**os.environ, "PPG_NB_CACHE": os.environ["PPG_NB_CACHE"], "OMP_NUM_THREADS": "1"}
    # --multi_gpu makes accelerate start the processes with torchrun; without a GPU they run DDP on the CPUs (MULTI_CPU).
    # (--cpu --num_processes 2 starts one process only: accelerate 1.16 reads it as a single CPU run.)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", "29519",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ppg_nb", "train", "--model", str(base_dir), "--mode", "offline",
           "--n-conversations", "16", "--n-turns", "2", "--batch-size", "2", "--max-steps", "2", "--eval-personas", "2",
           "--lora-r", "4", "--no-progress", "--output", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert saved["steps"] == 2 and saved["pc_after"] is not None
    assert "persona consistency" in done.stdout
    assert done.stdout.count("policy: 2-step lookahead") == 2, done.stdout[-2000:]   # two processes ran (each says what it trains)


DATA = consistent_llms_dir(required=False)  # $PPG_DATA: the Consistent-LLMs files (not shipped; `make test` sets it when they sit beside the repository)
needs_data = pytest.mark.skipif(DATA is None, reason="PPG_DATA is not set: the Consistent-LLMs files are not shipped")


@needs_data
def test_real_files_are_trained_on_with_their_problems_reported(tmp_path, capsys):
    "The public therapy file: records whose stored score the labels do not reproduce are reported and trained on; strict refuses."
    from ppg_nb.train import TrainConfig, load_data
    therapy = DATA / "full" / "therapy__mistral-instruct_0_261.json"
    conversations, _ = load_data(TrainConfig(data=str(therapy)))
    err = capsys.readouterr().err
    assert "record 11, field 'P2_prompt_consistency_score'" in err and "(kept: its line labels are used)" in err
    assert 11 in {c.meta["record"] for c in conversations}
    with pytest.raises(ValueError, match=r"therapy__mistral-instruct_0_261.json: record \d+, field 'P2_prompt_consistency_score'"):
        load_data(TrainConfig(data=str(therapy), strict_data=True))
    folder, _ = load_data(TrainConfig(data=str(DATA)))  # a folder of files
    assert len({c.meta["file"] for c in folder}) == 3
    unusable = json.loads((DATA / "education_sample.json").read_text())
    for rec in unusable: rec.pop("eval_prompt_consistency")
    (tmp_path / "none.json").write_text(json.dumps(unusable))
    with pytest.raises(ValueError, match=r"none.json: no evaluated persona lines to use \(4 problems"):
        load_data(TrainConfig(data=str(tmp_path / "none.json")))


@needs_data
def test_judge_free_measure_on_held_out_labelled_lines(tmp_path, base_dir):
    "Offline PPG on real dialogues with `eval_data`: the result carries the AUC of the line log-prob change, from the labels."
    from ppg_nb.train import train
    sample = DATA / "education_sample.json"
    # no baseline: with windows of 2 sequences, a per-turn batch mean would cancel every advantage
    result = train(_config(tmp_path, data=str(sample), eval_data=str(sample), max_steps=2, batch_size=2, max_length=1024,
                           lr=1e-2, baseline=None))
    shift = result.label_shift
    assert shift["n_lines"] == 20 and 0 < shift["n_consistent"] < 20
    assert 0.0 <= shift["label_auc"] <= 1.0 and shift["change_consistent"] != 0.0
    assert json.loads((tmp_path / "run" / "result.json").read_text())["label_shift"]["label_auc"] == shift["label_auc"]


@needs_data
def test_the_real_smollm2_model_trains_offline_on_real_dialogues(tmp_path, cache_env):
    "`ppg_nb train --model smollm2-135m-instruct --data FILE`: converted once from its PyPI wheel, one LoRA step, an adapter."
    cmd = [sys.executable, "-m", "ppg_nb", "train", "--model", "smollm2-135m-instruct", "--data", str(DATA / "education_sample.json"),
           "--max-steps", "1", "--batch-size", "2", "--no-progress", "--output", str(tmp_path / "smol")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cache_env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "smol" / "result.json").read_text())
    assert saved["base_model"] == "smollm2-135m-instruct" and saved["steps"] == 1 and saved["pc_before"] is None
    assert saved["config"]["eval_personas"] == 0                      # no synthetic-language evaluation for a real model
    adapter = _adapter(tmp_path / "smol")
    assert any("layers.29.mlp.down_proj.lora_A" in k for k in adapter)   # all 30 blocks of SmolLM2, attention and MLP


@needs_data
@pytest.mark.slow  # tens of seconds: `make test-slow` (run by .ci/run after the README's test command)
def test_the_real_smollm2_model_trains_online_against_logged_partners(tmp_path, cache_env):
    "Online PPG on SmolLM2: it writes the student's lines of real dialogues, a zero-shot judge scores them, PC is judged before and after."
    from ppg_nb.train import TrainConfig, load_data
    sample = str(DATA / "education_sample.json")
    one = tmp_path / "one_conversation.jsonl"                            # the judged PC replays it: one conversation keeps it quick
    save_conversations(load_data(TrainConfig(model="embedded"), sample)[0][:1], one)
    cmd = [sys.executable, "-m", "ppg_nb", "train", "--model", "smollm2-135m-instruct", "--mode", "online", "--partner", "logged",
           "--data", sample, "--eval-data", str(one), "--judge", "zero-shot:smollm2-135m-instruct", "--online-batch", "2",
           "--batch-size", "2", "--max-steps", "1", "--max-new-tokens", "12", "--no-progress", "--output", str(tmp_path / "online")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cache_env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "online" / "result.json").read_text())
    assert 0 <= saved["pc_before"] <= 1 and 0 <= saved["pc_after"] <= 1 and len(saved["pc_by_turn_before"]) == 5
    assert saved["label_shift"]["n_lines"] == 5
    log = [json.loads(line) for line in (tmp_path / "online" / "log.jsonl").read_text().splitlines()]
    assert log[0]["train/first_ratio_dev"] <= 1e-4 and log[0]["train/generated_tokens"] > 0


def test_k_auto_is_refused_where_it_cannot_work():
    from ppg_nb.train import TrainConfig
    with pytest.raises(ValueError, match="K is the lookahead of policy 'kstep'"): TrainConfig(policy="full", K="auto")
    with pytest.raises(ValueError, match="at least two distinct candidate K"): TrainConfig(K="auto", auto_candidates=[2])
    with pytest.raises(ValueError, match="integer K >= 1"): TrainConfig(K="auto", auto_candidates=[0, 2])
    with pytest.raises(ValueError, match="batch_size must be >= 2"): TrainConfig(K="auto", batch_size=1)
    with pytest.raises(ValueError, match="online_batch must be >= 2"): TrainConfig(K="auto", online_batch=1)
    with pytest.raises(ValueError, match="K must be an integer >= 1"): TrainConfig(K="sometimes")


def test_k_auto_chooses_logs_and_resumes_exactly(tmp_path, base_dir):
    "K='auto' picks among its candidates every step, logs the scores behind the pick, and resumes bit-exactly (CPU)."
    from ppg_nb.train import train
    kw = dict(K="auto", auto_candidates=[1, 2, 3], max_steps=4, n_turns=3)
    whole = train(_config(tmp_path, "whole", **kw))
    steps = [r for r in whole.history if "train/loss" in r]
    assert [r["auto/K"] for r in steps][0] == 2                               # the first step, before any statistics
    assert all(r["auto/K"] in (1, 2, 3) and len(r["auto/score"]) == 3 for r in steps)
    assert [r["auto/K"] for r in steps[1:]] == [r["auto/next_K"] for r in steps[:-1]]   # the pick is used the next step
    saved = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert saved["K"] == "auto" and saved["chosen_K"] == whole.chosen_K == [r["auto/K"] for r in steps]   # one K per step

    def stop_at_2(step, record):
        if step == 2: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, "cut", **kw), callback=stop_at_2)
    resumed = train(_config(tmp_path, "cut", resume_from=str(tmp_path / "cut"), **kw))
    assert [r["auto/K"] for r in resumed.history] == [r["auto/K"] for r in whole.history]
    # the scores are float64 sums of float32 matmuls: MKL may split a reduction differently on a loaded machine (seen: 1e-8 relative)
    for got, want in zip([r["auto/score"] for r in resumed.history], [r["auto/score"] for r in whole.history]):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-15)
    assert resumed.chosen_K == whole.chosen_K                                   # the checkpoint keeps the steps before the cut
    a, b = _adapter(tmp_path / "whole"), _adapter(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_k_auto_online_and_from_the_command_line(tmp_path, base_dir):
    from ppg_nb.cli import main
    code = main(["train", "--K", "auto", "--auto-candidates", "1", "3", "--mode", "online", "--online-batch", "4", "--batch-size", "4",
                 "--n-turns", "3", "--max-steps", "2", "--max-new-tokens", "12", "--eval-personas", "0", "--lora-r", "4",
                 "--base-conversations", "48", "--base-steps", "4", "--no-progress", "--output", str(tmp_path / "cli")])
    assert code == 0
    log = [json.loads(line) for line in (tmp_path / "cli" / "log.jsonl").read_text().splitlines()]
    assert [r["auto/K"] for r in log][0] == 1 and all(r["auto/K"] in (1, 3) for r in log)   # 2 is not a candidate: the smallest


def test_each_run_does_what_its_config_says(tmp_path, base_dir):
    "The fields that change what a step does, checked against what the steps logged (mode='offline' without data once ran online)."
    from ppg_nb.cli import main
    from ppg_nb.train import train
    rollout_keys = {"train/rollout_pc", "train/first_ratio_dev", "train/generated_tokens", "time/generate_s"}
    off = train(_config(tmp_path, "off", max_steps=2, batch_size=3, grad_accum=2, lr=3e-3, data_seed=5))
    assert (off.mode, off.data, off.steps) == ("offline", "make_dataset('education', 24, 3, seed=5)", 2)
    for r in off.history:
        assert r["mode"] == "offline" and not rollout_keys & r.keys()     # an offline step generates nothing
        assert r["train/sequences"] == 3 * 2 and r["train/lr"] == 3e-3
    on = train(_config(tmp_path, "on", mode="online", max_steps=2, online_batch=4, batch_size=2, n_turns=2, max_new_tokens=8,
                       clip=0.2, ppo_epochs=2))
    assert (on.mode, on.steps) == ("online", 2) and "simulator" in on.data
    for r in on.history:
        assert r["mode"] == "online" and rollout_keys <= r.keys() and r["time/generate_s"] > 0
        assert r["train/sequences"] == 4 * 2 and r["train/agent_turns"] == 2
    # the command line: --mode offline without --data trains offline, and result.json and log.jsonl say so
    flags = ["train", "--mode", "offline", "--max-steps", "1", "--output", str(tmp_path / "cli"), "--no-progress",
             "--n-conversations", "24", "--n-turns", "3", "--batch-size", "4", "--eval-personas", "0", "--lora-r", "4",
             "--base-conversations", "48", "--base-steps", "4"]
    assert main(flags) == 0
    saved = json.loads((tmp_path / "cli" / "result.json").read_text())
    log = [json.loads(line) for line in (tmp_path / "cli" / "log.jsonl").read_text().splitlines()]
    assert saved["mode"] == "offline" and saved["data"].startswith("make_dataset(")
    assert [r["mode"] for r in log] == ["offline"] and not rollout_keys & log[0].keys()


@pytest.mark.slow  # tens of seconds: `make test-slow` (run by .ci/run after the README's test command)
def test_throughput_benchmark_short_form_runs_and_prints_every_ratio(cache_env, base_dir):
    "CI's short form of tests/benchmarks/bench_train_throughput.py on the tiny base: it completes and prints every ratio."
    bench = Path(__file__).parent / "benchmarks" / "bench_train_throughput.py"
    run = subprocess.run([sys.executable, str(bench), "--steps", "4", "--rounds", "1", "--online-steps", "1", "--no-targets",
                          "--base-conversations", "48", "--base-steps", "4"], env=cache_env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    for ratio in ("train / bare loop", "train / SFTTrainer", "sample_lines / bare generate", "LineSampler / bare generate"):
        assert f"{ratio} " in run.stdout and "not enforced" in run.stdout, run.stdout
