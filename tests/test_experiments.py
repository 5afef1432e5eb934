"""`ppg_nb.experiments`: a micro run end to end, resume after an interruption, the claims on synthetic data, the CLI's refusals.

Training runs use a tiny base model (4 SFT steps) built once per session in a temporary cache, and conversations of 2 turns.
"""
import contextlib
import io
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

TINY = dict(base_conversations=48, base_steps=4, lora_r=4, max_new_tokens=16, batch_size=4)


def micro_spec(**kw):
    from ppg_nb.experiments import ExperimentSpec
    base = dict(domains=("education",), methods=("base", "greedy", "full"), seeds=(0,), n_train=8, n_turns=2, Ns=(8,),
                Ks=(1,), lengths=(2,), length_methods=("base", "greedy"), eval_personas=2, n_samples=1, train_overrides=TINY,
                scaling_auto=False)  # K='auto' in the scaling study: the notebook's micro run
    return ExperimentSpec("micro", **{**base, **kw})


@pytest.fixture
def counted(monkeypatch):
    "Count the training runs `run_experiments` starts (the real `train` still runs)."
    import ppg_nb.experiments as ex
    calls = []
    real = ex.train
    def counting(config, **kw):
        calls.append(config.output)
        return real(config, **kw)
    monkeypatch.setattr(ex, "train", counting)
    return calls


def test_micro_run_writes_every_file_and_resumes_without_training(tmp_path, cache, counted):
    from ppg_nb.experiments import COLUMNS, STUDIES, load_results, plan, run_experiments, run_name
    spec, out = micro_spec(), tmp_path / "res"
    first = run_experiments(spec, out, command="test micro", log=None)
    # greedy and full at N = 8 train once: the scaling and length studies reuse them
    assert len(counted) == 2
    for study in STUDIES:
        df = pd.read_csv(out / f"{study}.csv")
        assert tuple(df.columns) == COLUMNS[study]
        assert len(df) == (plan(spec).study == study).sum() == len(first[study])
        assert df.pc.between(0, 1).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["mode"] == "micro" and meta["command"] == "test micro" and meta["complete"]
    assert {"ppg_nb", "torch", "transformers", "peft", "python"} <= set(meta["versions"]) and meta["date"]
    assert meta["spec"]["n_train"] == 8 and meta["commands"][-1]["trained"] == 2
    assert (out / ".gitignore").read_text().splitlines()[1:] == ["runs/", ".locks/"]
    samples = sorted(p.name for p in (out / "samples").iterdir())
    assert f"{run_name('education', 'greedy', 8, 2, 0)}.jsonl" in samples and f"{run_name('education', 'base', 8, 2, 0)}.jsonl" in samples
    # the base row is the pc_before of the trained runs (same model, same held-out personas)
    result = json.loads((out / "runs" / run_name("education", "full", 8, 2, 0) / "result.json").read_text())
    table = first["table"].set_index("method")
    assert math.isclose(table.pc["base"], result["pc_before"], abs_tol=1e-9) and table.pc["full"] == result["pc_after"]
    # the same call again: every row is there, nothing trains, nothing is added
    again = run_experiments(spec, out, log=None)
    assert len(counted) == 2
    for study in STUDIES: pd.testing.assert_frame_equal(again[study], first[study])
    # a lost row comes back from its run's result.json; a lost run trains again
    lines = (out / "table.csv").read_text().splitlines()
    (out / "table.csv").write_text("\n".join(lines[:-1]) + "\n")
    run_experiments(spec, out, log=None)
    assert len(counted) == 2
    import shutil
    shutil.rmtree(out / "runs" / run_name("education", "full", 8, 2, 0))
    lines = (out / "table.csv").read_text().splitlines()
    (out / "table.csv").write_text("\n".join(lines[:-1]) + "\n")
    run_experiments(spec, out, log=None)
    assert len(counted) == 3
    assert load_results(out, mode="micro").table.sort_values("method").pc.tolist() == first["table"].sort_values("method").pc.tolist()


def test_interrupted_run_loses_nothing(tmp_path, cache, monkeypatch):
    import ppg_nb.experiments as ex
    spec, out = micro_spec(Ns=(4, 8)), tmp_path / "res"
    real, calls = ex.train, []
    def interrupt_second(config, **kw):
        calls.append(config.output)
        if len(calls) == 2: raise KeyboardInterrupt
        return real(config, **kw)
    monkeypatch.setattr(ex, "train", interrupt_second)
    with pytest.raises(KeyboardInterrupt): ex.run_experiments(spec, out, log=None)
    done = pd.read_csv(out / "table.csv")
    assert done.method.tolist() == ["base", "greedy"]  # the rows finished before the interruption are on disk
    assert not json.loads((out / "meta.json").read_text())["complete"]
    calls.clear()
    monkeypatch.setattr(ex, "train", lambda config, **kw: (calls.append(config.output), real(config, **kw))[1])
    res = ex.run_experiments(spec, out, log=None)
    # resumed: full at N = 8, then greedy and full at N = 4; greedy at N = 8 was not trained again
    assert [os.path.basename(c) for c in calls] == ["education-full-N8-T2-s0", "education-greedy-N4-T2-s0",
                                                    "education-full-N4-T2-s0"]
    assert res["meta"]["complete"] and len(res["table"]) == 3 and len(res["scaling"]) == 4


def test_studies_run_one_at_a_time_complete_the_folder(tmp_path, cache):
    from ppg_nb.experiments import run_table, run_scaling, run_length
    spec, out = micro_spec(), tmp_path / "res"
    for run in (run_table, run_scaling):
        run(spec, out, command=run.__name__, log=None)
        assert not json.loads((out / "meta.json").read_text())["complete"]  # the length study is still missing
    run_length(spec, out, command="run_length", log=None)
    meta = json.loads((out / "meta.json").read_text())
    assert [c["command"] for c in meta["commands"]] == ["run_table", "run_scaling", "run_length"]
    assert all(c["finished"] for c in meta["commands"]) and meta["complete"]


def test_output_of_another_mode_or_spec_is_refused(tmp_path):
    from ppg_nb.experiments import QUICK, open_output, run_table
    open_output(QUICK, tmp_path / "q")
    with pytest.raises(ValueError, match="holds 'quick' results, not 'micro'"): run_table(micro_spec(), tmp_path / "q")
    with pytest.raises(ValueError, match="eval_personas: 8 there, 3 now"):
        open_output(type(QUICK)(**{**QUICK.to_dict(), "eval_personas": 3}), tmp_path / "q")
    (tmp_path / "other").mkdir(); (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no experiments"): open_output(QUICK, tmp_path / "other")


def _run_table_in_a_process(out, log_file):
    "One of two processes that run the same study of the same folder at once."
    import ppg_nb.experiments as ex
    with open(log_file, "w") as log: ex.run_table(micro_spec(), out, command=f"process {os.getpid()}", log=lambda line: print(line, file=log, flush=True))


@pytest.mark.slow  # tens of seconds: `make test-slow` (run by .ci/run after the README's test command)
def test_two_processes_on_one_study_write_each_row_once_and_train_each_run_once(tmp_path, cache):
    import multiprocessing
    from ppg_nb.experiments import plan
    out, spawn = tmp_path / "res", multiprocessing.get_context("spawn")   # spawn: a fresh interpreter each, as two shells would
    procs = [spawn.Process(target=_run_table_in_a_process, args=(out, tmp_path / f"log{i}")) for i in range(2)]
    for p in procs: p.start()
    for p in procs: p.join(600)
    assert [p.exitcode for p in procs] == [0, 0], [(tmp_path / f"log{i}").read_text() for i in range(2)]
    table, spec = pd.read_csv(out / "table.csv"), micro_spec()
    assert sorted(table.method) == sorted(plan(spec).query("study == 'table'").method)      # every row once
    turns = pd.read_csv(out / "turns.csv")
    assert not turns.duplicated(["method", "N", "seed", "turn"]).any() and len(turns) == len(table) * spec.n_turns
    commands = json.loads((out / "meta.json").read_text())["commands"]
    assert len(commands) == 2 and all(c["finished"] for c in commands)
    assert sum(c["trained"] for c in commands) == 2                              # greedy and full, each trained by one process


def _scaling(best_by_N, Ks=(1, 2, 4), seeds=(0, 1, 2)):
    "Scaling rows of one domain whose mean PC peaks at the given K for each N."
    return pd.DataFrame([dict(domain="d", N=N, K=K, seed=s, pc=0.5 + 0.1 * (K == best) + 0.01 * s)
                         for N, best in best_by_N.items() for K in Ks for s in seeds])


@pytest.mark.parametrize("best, verdicts", [
    ({16: 1, 64: 2, 256: 4}, (True, True, True)),     # the paper's picture
    ({16: 2, 64: 1, 256: 2}, (False, True, True)),    # best K shrinks from 16 to 64
    ({16: 4, 64: 4, 256: 4}, (True, False, True)),    # full planning best at the smallest N
    ({16: 1, 64: 1, 256: 1}, (True, True, False)),    # greedy best at the largest N
    ({16: 4, 64: 2, 256: 1}, (False, False, False)),  # everything reversed
])
def test_check_claims_on_synthetic_data(best, verdicts):
    from ppg_nb.experiments import CLAIMS, check_claims, targets_met
    c = check_claims(_scaling(best))["d"]
    assert c["best_K_by_N"] == best and c["full_K"] == 4 and c["seeds"] == 3
    assert tuple(c[k] for k in CLAIMS) == verdicts
    assert c["all_hold"] == all(verdicts)
    assert targets_met({"a": c, "b": c}) == all(verdicts)
    assert set(c["pc_at_smallest_N"]) == {1, 2, 4}


def test_check_claims_reads_the_data_not_the_labels():
    from ppg_nb.experiments import check_claims
    df = _scaling({16: 1, 64: 2, 256: 4})
    df.loc[(df.N == 256) & (df.K == 1), "pc"] += 1.0  # make greedy win at the largest N
    c = check_claims(df)["d"]
    assert c["best_K_by_N"][256] == 1 and c["greedy_not_best_at_largest_N"] is False and c["best_K_does_not_shrink"] is False


def test_summarize_table_standard_errors_and_winners():
    from ppg_nb.experiments import format_table, summarize_table
    df = pd.DataFrame(dict(domain=["a"] * 5 + ["b"], method=["full", "full", "full", "greedy", "greedy", "base"],
                           seed=[0, 1, 2, 0, 1, 0], pc=[0.2, 0.4, 0.9, 0.5, 0.7, 0.3]))
    s = summarize_table(df).set_index(["domain", "method"])
    sd = pd.Series([0.2, 0.4, 0.9]).std(ddof=1)
    assert math.isclose(s.loc[("a", "full"), "mean"], 0.5) and math.isclose(s.loc[("a", "full"), "se"], sd / math.sqrt(3))
    assert math.isclose(s.loc[("a", "greedy"), "se"], 0.1)  # sd of (0.5, 0.7) is 0.1414, over sqrt(2)
    assert math.isnan(s.loc[("b", "base"), "se"]) and s.loc[("b", "base"), "n"] == 1
    assert s.winner.to_dict() == {("a", "full"): False, ("a", "greedy"): True, ("b", "base"): True}
    wide = format_table(summarize_table(df))
    assert wide.loc["greedy", "a"] == "0.600 ± 0.100 ★" and wide.loc["base", "b"] == "0.300 ★"


def test_spec_refuses_bad_settings():
    from ppg_nb.experiments import FULL, QUICK, ExperimentSpec, plan
    with pytest.raises(ValueError, match="at least 3 seeds"): ExperimentSpec("full", seeds=(0,))
    with pytest.raises(ValueError, match="may not set"): ExperimentSpec("quick", train_overrides={"seed": 3})
    with pytest.raises(ValueError, match="Ks must be <= n_turns"): ExperimentSpec("quick", n_turns=4, Ks=(5,))
    # the paper's figures: three domains, three seeds, K = 1..5 and full, the paper's lengths, every method in the table
    assert len(FULL.seeds) >= 3 and FULL.lengths == (10, 20, 40, 60) and FULL.domains == ("education", "therapy", "chatting")
    assert FULL.scaling_Ks == (1, 2, 3, 4, 5, FULL.n_turns) and FULL.length_domains == FULL.domains
    from ppg_nb.experiments import METHODS
    assert set(FULL.methods) == set(METHODS) and {1, FULL.n_turns} <= set(FULL.scaling_Ks) and len(FULL.Ns) >= 3
    with pytest.raises(ValueError, match="length_domains"): ExperimentSpec("quick", domains=("education",), length_domains=("therapy",))
    assert ExperimentSpec("quick", n_train=64).length_N == 64 and set(plan(FULL)[lambda d: d.study == "length"].N) == {FULL.length_N}
    p = plan(QUICK)
    assert set(p.study) == {"table", "scaling", "length"}
    assert {1, QUICK.n_turns} <= set(p[p.study == "scaling"].K.dropna())


def _cli(args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ppg_nb", "experiments", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_refuses_bad_flags_in_one_line(tmp_path):
    from ppg_nb.cli import main
    done = _cli(["--quick", "--domains", "cooking", "--output", str(tmp_path / "r")])
    assert done.returncode == 2 and "unknown domain 'cooking'" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    (tmp_path / "f").mkdir(); (tmp_path / "f" / "meta.json").write_text(json.dumps({"mode": "full", "spec": {}, "commands": []}))
    for argv, message in [(["--full", "--seeds", "0", "1"], "full mode needs at least 3 seeds"),
                          (["--quick", "--output", str(tmp_path / "f")], "holds 'full' results, not 'quick'")]:
        assert main(["experiments", *argv]) == 2
    for argv in (["--quick", "--full"], ["--seeds", "one"]):  # argparse's usage errors: exit code 2, one line
        err = io.StringIO()
        with contextlib.redirect_stderr(err): assert main(["experiments", *argv]) == 2
        assert len(err.getvalue().strip().splitlines()) == 1 and "--help" in err.getvalue(), err.getvalue()


def test_cli_plan(capsys):
    from ppg_nb.cli import main
    assert main(["experiments", "--full", "--plan"]) == 0
    text = capsys.readouterr().out
    from ppg_nb.experiments import FULL
    assert f"mode full: {', '.join(FULL.domains)}; seeds [0, 1, 2]" in text and "distinct training runs" in text
    # one piece: one domain, one study
    assert main(["experiments", "--full", "--plan", "--domains", "therapy", "--studies", "scaling"]) == 0
    text = capsys.readouterr().out
    assert "mode full: therapy;" in text and "scaling: 63 rows, 63 training runs" in text and "length:" not in text
