"""One `train` run on the processes `accelerate launch` starts, or alone (run by tests/test_fsdp.py, not collected by pytest).

Online, every process rolls out the whole step's batch (`online_batch` x processes conversations, seeded by the step only)
and trains on its own slice of it, so that a run of 2 processes and a run of 1 with twice the `online_batch` train on the
same rollouts (`ppg_nb.train.sample_rollouts` seeds each process's rollouts differently). Their judge is a stand-in that
rewards an agent line by its length (the rule judge gives the tiny test model's lines 0: every loss would be 0). The config is JSON:

python -m accelerate.commands.launch --config_file configs/fsdp2_cpu.yaml tests/fsdp_two_processes.py '{"mode": "online", ...}'
"""
import json
import sys
from dataclasses import replace

import torch

import ppg_nb.train as T
from ppg_nb.core import derive_seed
from ppg_nb.personas import sample_personas
from ppg_nb.rollout import TokenAgent, rollout


def whole_batch_rollouts(run, step: int) -> T.Sample:
    "The step's rollouts of every process, the same on each (seeded by the step); this process trains its slice."
    c, world, rank = run.config, run.accelerator.num_processes, run.accelerator.process_index
    seed = derive_seed(c.seed, step, 0, 1) % 2 ** 31
    torch.manual_seed(seed)                                           # the sampling: the same on every process
    agent = TokenAgent(run.net, run.tok, c.temperature, c.max_new_tokens)
    convs, examples = rollout(run.net, run.tok, c.domain, sample_personas(c.domain, c.online_batch * world, seed=seed),
                              c.n_turns, seed, agent=agent)
    mine = examples[rank * c.online_batch:(rank + 1) * c.online_batch]   # conv_index still names a conversation of `convs`
    return T.Sample(convs, mine, T.minibatches(len(mine), c.batch_size), agent.generate_seconds)


class LengthJudge:
    "A stand-in judge: each agent line's reward is its length in characters over 40 (at most 1)."
    def score_into(self, conversations):
        return [replace(c, rewards=[min(1.0, len(c.turns[i][1]) / 40) for i in c.agent_turns]) for c in conversations]


if __name__ == "__main__":
    T.sample_rollouts, T.load_judge = whole_batch_rollouts, lambda spec, device=None: LengthJudge()
    T.train(T.TrainConfig(**json.loads(sys.argv[1])))
