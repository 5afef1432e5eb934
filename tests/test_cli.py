"""`ppg_nb train` and `python -m ppg_nb train` as a user runs them (subprocesses), on a tiny base model in a temporary cache."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

QUICK = ["--mode", "offline", "--n-conversations", "16", "--n-turns", "2", "--batch-size", "4", "--eval-personas", "2", "--lora-r", "4",
         "--base-conversations", "48", "--base-steps", "4", "--max-new-tokens", "16", "--no-progress"]


@pytest.fixture(scope="module")
def env(cache_env):
    return cache_env


def _run(args, env, module=True, timeout=300):
    exe = [sys.executable, "-m", "ppg_nb"] if module else [shutil.which("ppg_nb") or "ppg_nb"]
    return subprocess.run(exe + args, capture_output=True, text=True, env=env, timeout=timeout)


def test_python_m_train_writes_result(tmp_path, env):
    done = _run(["train", "--max-steps", "2", "--output", str(tmp_path / "run"), *QUICK], env)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    for key in ("pc_before", "pc_after", "policy", "K", "config"):
        assert key in saved
    assert saved["policy"] == "kstep" and saved["K"] == 2 and saved["config"]["domain"] == "education"
    assert list((tmp_path / "run" / "adapter").glob("*.safetensors"))
    assert "before" in done.stdout and "after" in done.stdout


def test_resume_from_cli_continues_the_run(tmp_path, env):
    out = tmp_path / "run"
    assert _run(["train", "--max-steps", "1", "--output", str(out), "--policy", "greedy", *QUICK], env).returncode == 0
    # resuming keeps the checkpoint's config (greedy) and only changes what is given
    done = _run(["train", "--resume-from", str(out), "--max-steps", "2", "--no-progress"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((out / "result.json").read_text())
    assert saved["policy"] == "greedy" and saved["steps"] == 2


@pytest.mark.skipif(shutil.which("ppg_nb") is None, reason="console script not installed (pip install -e .)")
def test_console_script(env):
    done = _run(["train", "--help"], env, module=False, timeout=60)
    assert done.returncode == 0 and "--resume-from" in done.stdout and "--K" in done.stdout
    assert _run(["credit", "--n", "3"], env, module=False, timeout=60).returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--K", "0"], "K must be an integer >= 1"),
    (["--policy", "nope"], "unknown --policy 'nope'"),
    (["--policy", "full", "--K", "3"], "does not take it"),
    (["--model", "/no/such/model"], "does not exist"),
    (["--data", "/no/such/data.jsonl"], "does not exist"),
])
def test_bad_flags_fail_fast_with_one_line(args, message, env):
    done = _run(["train", *args], env, timeout=60)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_output_holding_another_run_is_refused(tmp_path, env):
    (tmp_path / "old").mkdir(); (tmp_path / "old" / "result.json").write_text("{}")
    done = _run(["train", "--output", str(tmp_path / "old"), *QUICK], env, timeout=60)
    assert done.returncode == 2 and "holds another run" in done.stderr
