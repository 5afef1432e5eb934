"""One PPGTrainer step on each of the processes `accelerate launch` starts (run by tests/test_trl.py, not collected by pytest).

Each process writes what its rollout played and what TRL's loss received to OUT/rank<k>.json:
python -m accelerate.commands.launch --cpu --num_processes 2 tests/trl_two_processes.py OUT
"""
import json
import os
import sys

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import torch
from trl import GRPOConfig

from ppg_nb.bases import embedded_base
from ppg_nb.model import add_lora, load_model
from ppg_nb.trl import PersonaRollout, PPGTrainer, judge_reward


def main(out: str, policy: str = "kstep", K: int = 2):
    model, tok = load_model(str(embedded_base("education")))
    model = add_lora(model, 8, 16, seed=0)
    rollout = PersonaRollout("education", n_turns=3, max_new_tokens=16, seed=0)
    config = GRPOConfig(output_dir=os.path.join(out, "run"), per_device_train_batch_size=2, num_generations=4, max_steps=1,
                        learning_rate=1e-3, loss_type="dapo", scale_rewards="none", beta=0.0, gradient_checkpointing=False, bf16=False,
                        use_cpu=True, seed=0, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = PPGTrainer(model, judge_reward("rule"), config, policy=policy, policy_params={"K": K},
                         train_dataset=rollout.dataset(4, seed=0), processing_class=tok, rollout_func=rollout)
    played, received = [], []
    def keep_rollout(prompts, t): played.append(rollout(prompts, t)); return played[-1]
    trainer.rollout_func = keep_rollout
    loss_fn = trainer._compute_loss
    def keep_loss(m, inputs):
        received.append({k: inputs[k].tolist() for k in ("advantages", "completion_ids")}); return loss_fn(m, inputs)
    trainer._compute_loss = keep_loss
    trainer.train()
    rank = trainer.accelerator.process_index
    record = {"rank": rank, "world": trainer.accelerator.num_processes, "pad": tok.pad_token_id,
              "completion_ids": played[0]["completion_ids"], "turn_of_token": played[0]["turn_of_token"],
              "rewards": [c.rewards for c in played[0]["conversations"]], "prompts": [c.persona for c in played[0]["conversations"]],
              "received": received}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f: json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1])
