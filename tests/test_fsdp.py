"""FSDP2 through accelerate on 2 CPU processes (gloo): the embedded model offline, sharded; the first step's loss equals one
process's on the same global batch, a sharded checkpoint resumes bit for bit, the adapter loads without FSDP; bad input refused."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fsdp2_cpu.yaml"
RUN = dict(mode="offline", n_conversations=16, n_turns=2, eval_personas=0, lora_r=4, baseline=None, progress=False)


def _launch(base_dir, out, *flags):
    "`accelerate launch --config_file configs/fsdp2_cpu.yaml -m ppg_nb train ...`: 2 processes, each 1 thread."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--main_process_port", "29517",
           "-m", "ppg_nb", "train", "--model", str(base_dir), "--mode", "offline", "--n-conversations", "16", "--n-turns", "2",
           "--batch-size", "2", "--eval-personas", "0", "--lora-r", "4", "--baseline", "none", "--no-progress",
           "--output", str(out), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow  # tens of seconds: `make test-slow` (run by .ci/run after the README's test command)
def test_two_sharded_processes_match_one_and_resume(tmp_path, base_dir):
    from ppg_nb.train import TrainConfig, train
    from ppg_nb.model import load_model
    from peft import PeftModel, get_peft_model_state_dict
    one = train(TrainConfig(**RUN, model=str(base_dir), batch_size=4, max_steps=1, output=str(tmp_path / "one")))
    out = tmp_path / "fsdp"
    log = _launch(base_dir, out, "--max-steps", "2", "--save-every", "1")   # checkpoints after steps 1 and 2
    # the global batch of 2 x 2 sequences is the one process's batch of 4: the same loss to 1e-5 relative
    assert abs(log[0]["train/loss"] - one.history[0]["train/loss"]) <= 1e-5 * abs(one.history[0]["train/loss"])
    first = out / "checkpoints" / "checkpoint_0"
    assert {"adapter", "optimizer_0", "pytorch_model_fsdp_0", "random_states_0.pkl", "random_states_1.pkl", "state.json",
            "state_1.json"} <= {p.name for p in first.iterdir()}                # accelerate's sharded state, the gathered adapter
    # the saved adapter is one safetensors file that loads without FSDP, into the plain base model
    whole = load_file(out / "adapter" / "adapter_model.safetensors")
    base, _ = load_model(str(base_dir))
    plain = PeftModel.from_pretrained(base, out / "adapter")
    loaded = get_peft_model_state_dict(plain)
    assert loaded.keys() == whole.keys() and all(torch.equal(loaded[k], whole[k]) for k in whole)
    assert any("lora_B" in k and whole[k].abs().sum() > 0 for k in whole)       # trained, not the initial zeros
    # resumed from the sharded checkpoint of step 1, step 2 gives the same adapter, bit for bit
    shutil.copytree(out / "adapter", tmp_path / "adapter_2")
    again = _launch(base_dir, out, "--max-steps", "2", "--resume-from", str(first))
    assert [r["step"] for r in again] == [1, 2] and again[1]["train/loss"] == log[1]["train/loss"]
    resumed = load_file(out / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(resumed[k], v) for k, v in load_file(tmp_path / "adapter_2" / "adapter_model.safetensors").items())
    # a checkpoint of 2 processes is refused by 1, before any model is loaded, with what to do
    with pytest.raises(ValueError, match=r"written by 2 processes and this run has 1: launch it with 2 processes"):
        train(TrainConfig(**RUN, model=str(base_dir), batch_size=2, max_steps=3, output=str(out), resume_from=str(out)))


def test_bad_input_is_refused_with_the_setting_named(base_dir, monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import LlamaForCausalLM
    from ppg_nb.model import add_lora, load_model
    from ppg_nb.sharded import check_wrappable, make_accelerator
    model, _ = load_model(str(base_dir))
    net = add_lora(model, 4, 8)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=["GPT2Block"])
    with pytest.raises(ValueError, match=r"fsdp_transformer_layer_cls_to_wrap=GPT2Block: LlamaForCausalLM has no module"):
        check_wrappable(net, SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)))
    plugin.transformer_cls_names_to_wrap = None
    check_wrappable(net, SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)))   # _no_split_modules: LlamaDecoderLayer
    monkeypatch.setattr(LlamaForCausalLM, "supports_gradient_checkpointing", False)
    with pytest.raises(ValueError, match=r"gradient_checkpointing=True \(--gradient-checkpointing\): LlamaForCausalLM does not"):
        load_model(str(base_dir), gradient_checkpointing=True)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true"); monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match=r"fsdp_version=1 in the accelerate config: ppg_nb shards with FSDP2 only"):
        make_accelerator(None)
