"""A newcomer's mistakes: each is refused in one line that names the flag, with no traceback and nothing written.

Every mistake runs through `ppg_nb.cli.main` (what the console script calls; two also as `python -m ppg_nb` subprocesses) in a folder prepared with the files a mistake needs
(an existing file, a run, a judge folder, a file of real-style dialogues). No command may create, change or delete a file.
How fast they are refused is measured by tests/benchmarks/bench_newcomer.py (target: each under 5 s), not here.
"""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ppg_nb.data import save_conversations
from ppg_nb.personas import make_dataset

# (the command after `ppg_nb`, the flag its message must name, a phrase of what to change); {d} is the prepared folder
MISTAKES = [
    ("train --lr abc", "--lr", "expected float"),
    ("train --K 0", "--K", "must be an integer >= 1"),
    ("train --policy kstepp", "--policy", "unknown --policy 'kstepp'"),
    ("train --domain cooking", "--domain", "choose one of"),
    ("train --output {d}/notes.txt --no-progress", "--output", "is a file"),
    ("train --output {d}/run --no-progress", "--resume-from", "holds another run"),
    ("train --data {d}/no_such.json", "--data", "does not exist"),
    ("train --mode offline --clip 0.2", "--clip", "--mode online"),
    ("train --mode online --ppo-epochs 3", "--clip", "set --clip"),
    ("train --resume-from {d}/no_run", "--resume-from", "no checkpoint there"),
    ("train --judge oracle", "--judge", "must be 'rule'"),
    ("train --data {d}/real.jsonl --mode online --partner logged --judge rule --no-progress", "--judge", "model judge"),
    ("judge eval --judge rule --data {d}/real.jsonl --output {d}/agreement.json", "--judge", "not from a synthetic domain"),
    ("judge eval --judge zero-shot:{d}/no_model --data {d}/synthetic.jsonl --output {d}", "--output", "is a folder"),
    ("judge eval --judge rule --data {d}/synthetic.jsonl --output {d}/notes.txt", "--overwrite", "exists"),
    ("judge eval --data {d}/synthetic.jsonl --output {d}/agreement.json", "--judge", "needs --judge"),
    ("judge eval --judge oracle --data {d}/synthetic.jsonl --output {d}/agreement.json", "--judge", "unknown --judge 'oracle'"),
    ("judge train --data {d}/synthetic.jsonl --output {d}/run", "--output", "not an empty folder"),
    ("experiments --domains cooking", "--domains", "unknown domain"),
    ("experiments --full --seeds 0", "--seeds", "at least 3 seeds"),
    ("experiments --studies tables", "--studies", "invalid choice"),
    ("real --data-dir {d}/no_data --output {d}/real_out", "--data-dir", "real data is not shipped"),
    ("real --data-dir {d} --output {d}/real_out --pc-judge oracle", "--pc-judge", "neither"),
    ("credit --K 0", "--K", "must be >= 1"),
    ("credit --n abc", "--n", "invalid int"),
]


def prepare(folder: Path) -> Path:
    "The files the mistakes need: a text file, a run folder, synthetic and real-style (no domain) labelled conversations."
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("a user's own file\n")
    (folder / "run").mkdir()
    (folder / "run" / "result.json").write_text("{}")
    synthetic = make_dataset("education", 2, 3, seed=1)
    save_conversations(synthetic, folder / "synthetic.jsonl")
    save_conversations([dataclasses.replace(c, meta={}) for c in synthetic],
                       folder / "real.jsonl")
    return folder


def snapshot(folder: Path) -> dict:
    "Every file and folder under `folder`, with a hash of each file's bytes."
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def run_mistake(command: str, folder: Path, env: dict) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "ppg_nb", *command.format(d=folder).split()]
    return subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("newcomer"))


@pytest.mark.parametrize("command,flag,phrase", MISTAKES, ids=[m[0].split(" {d}")[0] for m in MISTAKES])
def test_a_mistake_is_one_line_naming_the_flag_and_writes_nothing(command, flag, phrase, folder, cache, capsys, monkeypatch):
    "In process (`ppg_nb.cli.main`, what the console script calls): any exception but the refusal fails the test."
    from ppg_nb.cli import main
    monkeypatch.chdir(folder)
    before = snapshot(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(command.format(d=folder).split())
    lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(lines) == 1, lines
    assert flag in lines[0] and phrase in lines[0], lines[0]
    assert snapshot(folder) == before, f"{command} wrote, changed or deleted a file"


def test_a_mistake_as_a_subprocess_prints_no_traceback(folder, cache_env):
    "The same through `python -m ppg_nb`, for two of them (every one is run this way by tests/benchmarks/bench_newcomer.py)."
    for command, flag, phrase in (MISTAKES[0], MISTAKES[12]):
        done = run_mistake(command, folder, {**cache_env, "PYTHONWARNINGS": "ignore"})
        assert done.returncode != 0 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert flag in done.stderr and phrase in done.stderr


def test_there_are_at_least_15_mistakes_over_every_subcommand():
    assert len(MISTAKES) >= 15
    assert {m[0].split()[0] for m in MISTAKES} == {"train", "judge", "experiments", "real", "credit"}


def _bench_first_hour():
    "tests/benchmarks/bench_first_hour.py as a module (its output reader, stamped with times)."
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_first_hour", Path(__file__).parent / "benchmarks" / "bench_first_hour.py")
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    return module


def test_train_says_what_it_does_in_order_and_is_never_silent_long(tmp_path):
    "`ppg_nb train` as a user runs it (a subprocess, an empty cache, a recipe that is not shipped, so the base is built): each "
    "phase announces itself, in order, and no gap in the output is longer than the benchmark's limit."
    bench = _bench_first_hour()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PPG_NB_CACHE": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = (f"ppg_nb train --base-conversations 48 --base-steps 4 --max-steps 2 --online-batch 4 --batch-size 4 "
               f"--eval-personas 4 --output {tmp_path}/run")
    run = bench.timed_output(command, tmp_path, env)
    text = [piece for _, piece in run["pieces"]]
    assert run["rc"] == 0, text[-5:]
    phases = ["building the embedded base model of education once", "loading", "persona consistency before training",
              "PPG 2-step lookahead, online", "persona consistency after training", "policy: 2-step lookahead"]
    found = [next((i for i, piece in enumerate(text) if phase in piece), None) for phase in phases]
    assert None not in found, dict(zip(phases, found))
    assert found == sorted(found), dict(zip(phases, found))
    assert str(tmp_path / "cache" / "base") in text[found[0]]          # where the build is kept
    assert bench.FIRST_STEP.search(next(p for p in text if p.startswith("PPG") and "1/2" in p))
    longest = bench.silences(run["pieces"], run["seconds"])[0]
    assert longest["seconds"] <= bench.MAX_SILENCE_S, longest
