"""ppg_nb.trl: the advantages TRL's loss receives are PPG's, token for token; bad input is refused; a group split over two
processes gets the whole group's baseline. About 40 s of CPU; the two-process test (`-m slow` to choose it, `-m "not slow"`
to leave it out) about 15 s more."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import torch
from trl import GRPOConfig

from ppg_nb.bases import embedded_base
from ppg_nb.model import add_lora, load_model
from ppg_nb.trl import (SEQUENCE_LOSS_TYPES, TOKEN_LOSS_TYPES, PersonaRollout, PPGTrainer, check_trl_version, judge_reward,
                        reference_advantages, token_advantages)

ROOT = Path(__file__).resolve().parents[1]
GROUP = 4


def _config(tmp_path, **changes) -> GRPOConfig:
    kw = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, num_generations=GROUP, max_steps=1,
              learning_rate=1e-3, loss_type="dapo", scale_rewards="none", beta=0.0, gradient_checkpointing=False, bf16=False, use_cpu=True,
              seed=0, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    return GRPOConfig(**{**kw, **changes})


def _trainer(tmp_path, reward=None, seed=0, config=None, **credit):
    "A PPGTrainer on the embedded base model (LoRA), 2 personas x 4 dialogues of 3 turns, recording rollouts and loss inputs."
    model, tok = load_model(str(embedded_base("education")))
    rollout = PersonaRollout("education", n_turns=3, max_new_tokens=16, seed=seed)
    trainer = PPGTrainer(add_lora(model, 8, 16, seed=0), reward or judge_reward("rule"), config or _config(tmp_path), **credit,
                         train_dataset=rollout.dataset(2, seed=seed), processing_class=tok, rollout_func=rollout)
    trainer.played, trainer.received = [], []
    def keep_rollout(prompts, t): trainer.played.append(rollout(prompts, t)); return trainer.played[-1]
    trainer.rollout_func = keep_rollout
    loss_fn = trainer._compute_loss
    def keep_loss(model, inputs):
        trainer.received.append({k: inputs[k].detach().clone() for k in ("advantages", "completion_ids", "completion_mask")})
        return loss_fn(model, inputs)
    trainer._compute_loss = keep_loss
    return trainer, tok


def _row_of(row: list, keys: list, pad: int) -> int:
    "Which rolled-out dialogue a right-padded row of completion ids is (TRL shuffles rows before the loss)."
    hits = [j for j, k in enumerate(keys) if row[:len(k)] == list(k) and all(x == pad for x in row[len(k):])]
    assert len(hits) == 1, f"row matches dialogues {hits}"
    return hits[0]


CREDITS = {"greedy": dict(policy="greedy", policy_params={}), "K=2": dict(policy="kstep", policy_params={"K": 2}),
           "full": dict(policy="full", policy_params={})}
PPG_PARAMS = {"greedy": ("greedy", {}), "K=2": ("kstep", {"K": 2}), "full": ("full", {})}


@pytest.mark.parametrize("credit", list(CREDITS))
def test_the_loss_receives_ppg_advantages_token_for_token(tmp_path, credit):
    trainer, tok = _trainer(tmp_path, **CREDITS[credit])
    trainer.train()
    (played,), (received,) = trainer.played, trainer.received
    policy, params = PPG_PARAMS[credit]
    convs = played["conversations"]
    width = received["completion_ids"].shape[1]
    ours = token_advantages(reference_advantages(convs, GROUP, policy, **params), played["turn_of_token"], width)
    rows = [_row_of(r, played["completion_ids"], tok.pad_token_id) for r in received["completion_ids"].tolist()]
    torch.testing.assert_close(received["advantages"], ours[rows], atol=1e-6, rtol=0)
    # what makes it PPG and not GRPO: within one completion the advantage changes from turn to turn
    trained = received["completion_mask"].bool() & (received["advantages"] != 0)
    assert any(len(set(a[m].tolist())) > 1 for a, m in zip(received["advantages"], trained))
    # and the baseline is the group's: each group's advantages sum to 0 at every turn
    A = reference_advantages(convs, GROUP, policy, **params)
    torch.testing.assert_close(A.view(-1, GROUP, A.shape[1]).sum(1), torch.zeros(len(convs) // GROUP, A.shape[1]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("change", [dict(loss_type=t) for t in TOKEN_LOSS_TYPES if t != "dapo"]
                         + [dict(steps_per_generation=2, per_device_train_batch_size=4, max_steps=2), dict(num_iterations=2, max_steps=2),
                            dict(log_completions=True)], ids=str)
def test_every_valid_loss_type_and_batch_split_receive_ppg_advantages(tmp_path, change):
    "The other token-level loss types, a generation batch split over two steps, two passes over each batch, TRL's completions log."
    trainer, tok = _trainer(tmp_path, config=_config(tmp_path, **change), policy="kstep", policy_params={"K": 2})
    trainer.train()
    (played,) = trainer.played
    assert len(trainer.received) == change.get("max_steps", 1)           # one rollout, used by every step
    ours = reference_advantages(played["conversations"], GROUP, "kstep", K=2)
    for received in trainer.received:
        rows = [_row_of(r, played["completion_ids"], tok.pad_token_id) for r in received["completion_ids"].tolist()]
        expected = token_advantages(ours, played["turn_of_token"], received["completion_ids"].shape[1])[rows]
        torch.testing.assert_close(received["advantages"], expected, atol=1e-6, rtol=0)


def test_credit_sets_differ_on_the_same_dialogues(tmp_path):
    "The equality above is not trivial: on one batch of dialogues, greedy, K=2 and full give different advantages."
    trainer, _ = _trainer(tmp_path)
    trainer.train()
    convs = trainer.played[0]["conversations"]
    A = {name: reference_advantages(convs, GROUP, p, **kw) for name, (p, kw) in PPG_PARAMS.items()}
    assert not torch.allclose(A["greedy"], A["K=2"]) and not torch.allclose(A["K=2"], A["full"])


def test_trl_versions_outside_the_tested_range_are_refused():
    check_trl_version("1.16.0")
    for bad in ("1.15.2", "1.17.0", "0.29.0"):
        with pytest.raises(ImportError, match=r"ppg_nb.trl works with trl>=1.16,<1.17 .*this environment has trl " + bad):
            check_trl_version(bad)
    code = "import trl; trl.__version__ = '1.15.0'; import ppg_nb.trl"         # at import, before anything else
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode != 0 and "works with trl>=1.16,<1.17" in done.stderr and "has trl 1.15.0" in done.stderr


def test_a_scalar_reward_function_is_refused_by_name(tmp_path):
    def accuracy(prompts, completions, **kwargs): return [1.0] * len(prompts)
    trainer, _ = _trainer(tmp_path, reward=accuracy)
    with pytest.raises(ValueError, match="reward function 'accuracy' returned one scalar per dialogue"): trainer.train()


@pytest.mark.parametrize("loss", SEQUENCE_LOSS_TYPES)
def test_sequence_loss_types_are_refused_before_the_model_loads(tmp_path, loss):
    valid = ", ".join(repr(t) for t in TOKEN_LOSS_TYPES)
    with pytest.raises(ValueError, match=f"loss_type='{loss}' assumes one advantage per sequence.*\\({valid}\\)"):
        PPGTrainer("no/such-model", judge_reward("rule"), _config(tmp_path, loss_type=loss))


@pytest.mark.parametrize("change, message", [
    (dict(importance_sampling_level="sequence"), "set importance_sampling_level='token'"),
    (dict(mask_truncated_completions=True), "mask_truncated_completions"),
    (dict(off_policy_mask_threshold=0.5), "off_policy_mask_threshold"),
])
def test_settings_that_assume_one_advantage_per_sequence_are_refused(tmp_path, change, message):
    with pytest.raises(ValueError, match=message): PPGTrainer("no/such-model", judge_reward("rule"), _config(tmp_path, **change))


def test_other_reward_sources_and_credit_are_checked_first(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(ValueError, match="get_reward is one scalar per rollout"):
        PPGTrainer("no/such-model", judge_reward("rule"), config, environment_factory=object)
    with pytest.raises(ValueError, match=r"reward_funcs\[0\] .* reward model"): PPGTrainer("no/such-model", "some/reward-model", config)
    with pytest.raises(ValueError, match="K must be >= 1"): PPGTrainer("no/such-model", judge_reward("rule"), config, policy_params={"K": 0})
    with pytest.raises(ValueError, match="unknown policy"): PPGTrainer("no/such-model", judge_reward("rule"), config, policy="best")


@pytest.mark.slow
def test_a_group_split_over_two_processes_gets_the_whole_groups_baseline(tmp_path):
    "Two CPU processes (torch.distributed, gloo) each hold 2 of a group's 4 dialogues: the baseline is the mean of all 4."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]      # a free port for the rendezvous
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
           str(ROOT / "tests" / "trl_two_processes.py"), str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and len({p for r in ranks for p in r["prompts"]}) == 1   # one group, two processes
    from ppg_nb.data import Conversation
    def scored(r): return Conversation("p", "", "S", [("T", "a"), ("S", "b")] * len(r), list(range(1, 2 * len(r), 2)), r)
    convs = [scored(r) for rank in ranks for r in rank["rewards"]]                 # TRL's global order: rank 0's, then rank 1's
    whole = reference_advantages(convs, 4, "kstep", K=2)
    for k, rank in enumerate(ranks):
        (received,) = rank["received"]
        width = len(received["completion_ids"][0])
        ours = token_advantages(whole[2 * k:2 * k + 2], rank["turn_of_token"], width)
        rows = [_row_of(r, rank["completion_ids"], rank["pad"]) for r in received["completion_ids"]]
        torch.testing.assert_close(torch.tensor(received["advantages"]), ours[rows], atol=1e-6, rtol=0)
    local = torch.cat([reference_advantages(convs[:2], 2, "kstep", K=2), reference_advantages(convs[2:], 2, "kstep", K=2)])
    assert not torch.allclose(local, whole), "these rollouts cannot tell the whole group's baseline from a per-process one"
