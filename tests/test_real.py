"""The real-substrate experiment (`ppg_nb real`): its quick form end to end on SmolLM2 and the sample files of $PPG_DATA, resumed."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ppg_nb.data import consistent_llms_dir

DATA = consistent_llms_dir(required=False)  # $PPG_DATA: the Consistent-LLMs files (not shipped; `make test` sets it when they sit beside the repository)
needs_data = pytest.mark.skipif(DATA is None, reason="PPG_DATA is not set: the Consistent-LLMs files are not shipped")


@needs_data
@pytest.mark.slow  # tens of seconds: `make test-slow` (run by .ci/run after the README's test command)
def test_quick_real_experiment_end_to_end_and_resumed(tmp_path, cache_env):
    """`ppg_nb real --quick`: two methods trained, the judge-free measure on held-out and unseen lines; rerun: nothing redone.

    (The judged PC is not part of it: the quick sample's held-out chatting conversations open with the persona's line, which
    `replay_logged` does not replay yet.)"""
    out = tmp_path / "real"
    cmd = [sys.executable, "-m", "ppg_nb", "real", "--quick", "--data-dir", str(DATA), "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cache_env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_csv(out / "real.csv")
    assert list(rows["method"]) == ["greedy", "full"] and (rows["steps"] == 1).all()
    assert rows["auc_held_out"].between(0, 1).all() and (rows["n_held_out"] > 0).all() and (rows["n_unseen"] > 0).all()
    assert (rows["change_consistent_held_out"] != 0).all()                 # the adapters moved the model
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "real" and meta["commands"][0]["command"].startswith("ppg_nb real --quick")
    from ppg_nb.experiments import method_config
    for method in ("greedy", "full"):                                       # trained in the process, with the spec's settings
        config = json.loads((out / "runs" / f"{method}-s0" / "config.json").read_text())
        assert {k: config[k] for k in method_config(method)} == method_config(method)
        assert (config["seed"], config["max_steps"], config["data"]) == (0, 1, str(out / "data" / "train.jsonl"))
    assert (out / ".gitignore").read_text().count("data/") == 1
    again = subprocess.run(cmd, capture_output=True, text=True, env=cache_env, timeout=900)
    assert again.returncode == 0 and "training into" not in again.stdout
    assert pd.read_csv(out / "real.csv").equals(rows)
