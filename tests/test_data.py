"""Tests for ppg_nb.data: the Conversation schema, JSONL files, Lemma-1 rewards and the Consistent-LLMs loader."""
import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from ppg_nb.data import (consistent_llms_dir, Conversation, ConversationSet, Problem, conversation_from_dict, conversation_to_dict,
                         load_consistent_llms, load_conversations, save_conversations, to_hf_dataset, with_prefix_scores)

DATA = consistent_llms_dir(required=False)  # $PPG_DATA: the Consistent-LLMs files (not shipped; `make test` sets it when they sit beside the repository)
needs_data = pytest.mark.skipif(DATA is None, reason="PPG_DATA is not set: the Consistent-LLMs files are not shipped")

KW = dict(persona="I am 19 years old.", scenario="a lesson", role="Student",
          turns=[("Teacher", "How old are you?"), ("Student", "I am 19 years old."), ("Teacher", "And?"), ("Student", "Hm.")],
          agent_turns=[1, 3])


# ---------------------------------------------------------------- schema

def test_conversation_normalises_and_keeps_fields():
    c = Conversation(**KW, rewards=[1, 0.5], meta={"k": 1})
    assert c.rewards == [1.0, 0.5] and all(type(r) is float for r in c.rewards)
    assert c.agent_lines == ["I am 19 years old.", "Hm."]
    c2 = Conversation(**{**KW, "turns": [list(t) for t in KW["turns"]]})  # lists from JSON become tuples
    assert c2.turns == KW["turns"] and c2.rewards == [] and c2.meta == {}


@pytest.mark.parametrize("change, message", [
    ({"turns": []}, "field 'turns' is empty"),
    ({"turns": "abc"}, "field 'turns' must be a list"),
    ({"turns": [("Teacher", "Hi"), ("Student", 3)]}, "turns[1] must be a (speaker, text) pair"),
    ({"persona": ""}, "field 'persona' must not be empty"),
    ({"persona": 3}, "field 'persona' must be a string"),
    ({"role": ""}, "field 'role' must not be empty"),
    ({"scenario": None}, "field 'scenario' must be a string"),
    ({"agent_turns": [1, 7]}, "agent_turns[1] = 7 is outside 0..3"),
    ({"agent_turns": [3, 1]}, "strictly increasing"),
    ({"agent_turns": [0]}, "spoken by 'Teacher'"),
    ({"agent_turns": [True]}, "agent_turns[0] must be an int"),
    ({"agent_turns": 1}, "field 'agent_turns' must be a list"),
    ({"rewards": [0.5, float("nan")]}, "rewards[1] = nan is not in [0, 1]"),
    ({"rewards": [0.5, -0.1]}, "rewards[1] = -0.1 is not in [0, 1]"),
    ({"rewards": [0.5, 0.5, 0.5]}, "3 values for 2 agent turns"),
    ({"rewards": [0.5]}, "1 values for 2 agent turns"),
    ({"rewards": ["1", 1]}, "rewards[0] must be a number"),
    ({"meta": None}, "field 'meta' must be a dict"),
])
def test_conversation_refuses_bad_fields(change, message):
    with pytest.raises(ValueError, match=None) as e: Conversation(**{**KW, **change})
    assert message in str(e.value)


def test_from_dict_names_where_and_field():
    d = conversation_to_dict(Conversation(**KW))
    with pytest.raises(ValueError) as e: conversation_from_dict({**d, "rewards": [2, 0]}, "f.jsonl line 9")
    assert str(e.value).startswith("f.jsonl line 9: field 'rewards': rewards[0] = 2.0")
    with pytest.raises(ValueError, match="missing field\\(s\\) 'turns'"):
        conversation_from_dict({k: v for k, v in d.items() if k != "turns"})
    with pytest.raises(ValueError, match="unknown field\\(s\\) 'extra'"): conversation_from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="expected a JSON object"): conversation_from_dict([1, 2])


# ---------------------------------------------------------------- JSONL

def test_jsonl_round_trip_and_errors(tmp_path):
    convs = [Conversation(**KW, rewards=[1.0, 0.25], meta={"seed": 3, "tags": ["a"]}), Conversation(**KW)]
    path = save_conversations(convs, tmp_path / "sub" / "c.jsonl")
    assert load_conversations(path) == convs
    assert len(path.read_text().splitlines()) == 2
    path.write_text(path.read_text() + "\n" + json.dumps({**conversation_to_dict(convs[1]), "agent_turns": [0]}) + "\n")
    with pytest.raises(ValueError) as e: load_conversations(path)
    assert f"{path} line 4 (record 2): field 'agent_turns'" in str(e.value)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 \\(record 0\\): not valid JSON"): load_conversations(path)
    with pytest.raises(ValueError, match="no such file"): load_conversations(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="field 'meta' is not JSON-serialisable"):
        save_conversations([Conversation(**KW, meta={"x": {1, 2}})], tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="not a Conversation"): save_conversations([{"persona": "x"}], tmp_path / "y.jsonl")


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=40, deadline=None)
@given(persona=text.filter(str.strip), n=st.integers(1, 6), data=st.data())
def test_jsonl_round_trip_property(tmp_path_factory, persona, n, data):
    speakers = data.draw(st.lists(st.sampled_from(["A", "B"]), min_size=n, max_size=n))
    turns = [(s, data.draw(text)) for s in speakers]
    agent = [i for i, s in enumerate(speakers) if s == "A"]
    rewards = data.draw(st.one_of(st.just([]), st.lists(st.floats(0, 1), min_size=len(agent), max_size=len(agent))))
    conv = Conversation(persona, data.draw(text), "A", turns, agent, rewards, {"note": data.draw(text)})
    path = tmp_path_factory.mktemp("p") / "c.jsonl"
    assert load_conversations(save_conversations([conv], path)) == [conv]


def test_to_hf_dataset():
    pytest.importorskip("datasets")
    ds = to_hf_dataset([Conversation(**KW, rewards=[1, 0], meta={"a": 1}), Conversation(**KW, meta={"b": [1]})])
    assert ds.num_rows == 2 and ds[0]["rewards"] == [1.0, 0.0] and ds[1]["rewards"] == []
    assert ds[0]["turns"][0] == {"speaker": "Teacher", "text": "How old are you?"}
    assert json.loads(ds[1]["meta"]) == {"b": [1]}


def test_with_prefix_scores_lemma1():
    c = Conversation(**KW)
    r = with_prefix_scores(c, [0.8, 0.6]).rewards  # falling prefix score: still non-negative, sums to the final score
    assert all(x >= 0 for x in r) and math.isclose(sum(r), 0.6)
    assert with_prefix_scores(c, [0.25, 0.75]).rewards == pytest.approx([0.25, 0.5])
    with pytest.raises(ValueError, match="3 prefix scores for 2 agent turns"): with_prefix_scores(c, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="final score must be in \\[0, 1\\]"): with_prefix_scores(c, [0.1, 1.2])


# ---------------------------------------------------------------- Consistent-LLMs loader

@needs_data
def test_sample_reproduces_every_stored_score():
    got = load_consistent_llms(DATA)
    assert isinstance(got, ConversationSet) and got.problems == []
    assert len(got) == 4 + 3 + 8  # education 4 students, therapy 3 patients, chatting 4 records x 2 personas
    for c in got:
        assert sum(c.rewards) / len(c.rewards) == pytest.approx(c.meta["stored_score"], abs=1e-9)
        assert all(c.turns[i][0] == c.role for i in c.agent_turns)
        assert c.meta["speaker"] in ("P1", "P2") and isinstance(c.meta["record"], int)
    pol = {Path(f).name: p for f, p in got.polarity.items()}
    assert pol == {"education_sample.json": "yes_contradicts", "therapy_sample.json": "yes_consistent",
                   "chatting_sample.json": "yes_contradicts"}
    edu = [c for c in got if c.meta["task_name"] == "Education"]
    assert [c.role for c in edu] == ["Student"] * 4 and edu[0].scenario == "Zeus" and edu[0].agent_turns == [1, 3, 5, 7, 9]
    assert edu[0].meta["index_consistency_score"] == 0.6  # the stored line-to-line score travels in meta
    # the speaker prefix is split off the text
    assert not edu[0].turns[0][1].startswith("Teacher:") and edu[0].turns[0][0] == "Teacher"


def _record(n=4, yes=(), score=None, p1="", p2="I am a student.", pturn=1, entry=lambda i, out: [i, out]):
    lines = [[i, f"{'Teacher' if (i % 2 == 0) == (pturn == 1) else 'Student'}: line {i}"] for i in range(n)]
    student = [i for i in range(n) if (i % 2 == 0) != (pturn == 1)]
    evals = [entry(i, "... YES" if i in yes else "... NO") for i in student]
    return {"task_name": "Education", "P1": p1, "P2": p2, "pturn": pturn, "conversation": lines,
            "eval_prompt_consistency": evals, "P1_prompt_consistency_score": 0,
            "P2_prompt_consistency_score": 1 - len(yes) / len(student) if score is None else score}


def test_loader_quirks(tmp_path):
    three = _record(yes=[3], entry=lambda i, out: [i, "reasoning", out])
    strings_all = {**_record(score=0.5), "eval_prompt_consistency": ["NO", "NO", "YES", "YES"]}  # lines 1, 3: NO, YES
    strings_own = {**_record(score=0.5), "eval_prompt_consistency": ["YES", "NO"]}
    pturn2 = _record(n=5, pturn=2, yes=[2])  # P2 speaks line 0: the student speaks 0, 2, 4
    both = {**_record(p1="I teach.", yes=[1]), "eval_prompt_consistency": [[0, "NO"], [1, "YES"], [2, "YES"], [3, "NO"]],
            "P1_prompt_consistency_score": 0.5}
    (tmp_path / "q.json").write_text(json.dumps([three, strings_all, strings_own, pturn2, both]))
    got = load_consistent_llms(tmp_path / "q.json")
    assert [(c.meta["record"], c.meta["speaker"], c.role, c.agent_turns, c.rewards) for c in got] == [
        (0, "P2", "Student", [1, 3], [1.0, 0.0]), (1, "P2", "Student", [1, 3], [1.0, 0.0]),
        (2, "P2", "Student", [1, 3], [0.0, 1.0]), (3, "P2", "Student", [0, 2, 4], [1.0, 0.0, 1.0]),
        (4, "P1", "Teacher", [0, 2], [1.0, 0.0]), (4, "P2", "Student", [1, 3], [0.0, 1.0])]


def test_polarity_per_file_and_unreproduced_records(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([_record(yes=[1]), _record(), _record(yes=[1], score=0.9)]))
    (tmp_path / "b.json").write_text(json.dumps([_record(yes=[1], score=0.5), _record(yes=[1, 3], score=1.0),
                                                 _record(yes=[], score=0.5)]))
    with pytest.raises(ValueError) as e: load_consistent_llms([tmp_path / "a.json", tmp_path / "b.json"])
    assert "a.json: record 2, field 'P2_prompt_consistency_score': stored score 0.9 is not reproduced" in str(e.value)
    got = load_consistent_llms([tmp_path / "a.json", tmp_path / "b.json"], strict=False)
    assert list(got.polarity.values()) == ["yes_contradicts", "yes_consistent"]
    assert [(Path(p.file).name, p.record, p.field) for p in got.problems] == [
        ("a.json", 2, "P2_prompt_consistency_score"), ("b.json", 2, "P2_prompt_consistency_score")]
    # the unreproduced records are reported and kept: their line labels are what training uses
    assert all(p.kept for p in got.problems) and "(kept: its line labels are used)" in str(got.problems[0])
    assert [c.rewards for c in got] == [[0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]


BAD = [
    ({k: v for k, v in _record().items() if k != "conversation"}, "conversation", "missing or not a list"),
    ({**_record(), "conversation": []}, "conversation", "empty conversation"),
    ({**_record(), "conversation": [[0, "Teacher: a"], ["1", "Student: b"]]}, "conversation", "line 1 is not a [line_index"),
    ({**_record(), "conversation": [[1, "Teacher: a"], [0, "Student: b"]]}, "conversation", "out of order"),
    ({**_record(), "conversation": [[0, "Teacher: a"], [1, "no prefix"]]}, "conversation", "no 'Speaker: ' prefix"),
    ({**_record(), "pturn": "1"}, "pturn", "must be 1 or 2"),
    ({**_record(), "P1": 5}, "P1", "missing or not a string"),
    ({**_record(), "eval_prompt_consistency": None}, "eval_prompt_consistency", "missing or not a list"),
    ({**_record(), "eval_prompt_consistency": [[1, "NO", "x", "y"], [3, "NO"]]}, "eval_prompt_consistency", "entry 0 is neither"),
    ({**_record(), "eval_prompt_consistency": [[1, 5], [3, "NO"]]}, "eval_prompt_consistency", "entry 0 is neither"),
    ({**_record(), "eval_prompt_consistency": [[1, "NO"], [9, "NO"]]}, "eval_prompt_consistency", "outside 0..3"),
    ({**_record(), "eval_prompt_consistency": [[3, "NO"], [3, "NO"]]}, "eval_prompt_consistency", "out of order"),
    ({**_record(), "eval_prompt_consistency": [[1, "NO"], "NO"]}, "eval_prompt_consistency", "entry 1 is neither"),
    ({**_record(), "eval_prompt_consistency": [[3, "NO"]]}, "eval_prompt_consistency", "lines [1] have no judge output"),
    ({**_record(), "eval_prompt_consistency": ["NO"] * 3}, "eval_prompt_consistency", "cannot tell which line"),
    ({**_record(), "P2_prompt_consistency_score": "0.5"}, "P2_prompt_consistency_score", "missing or not a number"),
    ({**_record(), "P2_prompt_consistency_score": 1.5}, "P2_prompt_consistency_score", "missing or not a number"),
    ({**_record(), "conversation": [[0, "Teacher: a"], [1, "Student: b"], [2, "Teacher: c"], [3, "Pupil: d"]]},
     "conversation", "speaker names ['Pupil', 'Student']"),
    ("a string", "(record)", "not a JSON object"),
]


def test_malformed_records_are_problems_never_drops(tmp_path):
    records = [_record()] + [r for r, _, _ in BAD] + [_record(yes=[1])]
    (tmp_path / "bad.json").write_text(json.dumps(records))
    got = load_consistent_llms(tmp_path / "bad.json", strict=False)
    assert [c.meta["record"] for c in got] == [0, len(records) - 1]
    assert [p.record for p in got.problems] == list(range(1, len(BAD) + 1))  # every bad record reported, in order
    for p, (_, field, reason) in zip(got.problems, BAD):
        assert isinstance(p, Problem) and p.field == field and reason in p.reason, (p, field, reason)
        assert str(p).startswith(f"{tmp_path / 'bad.json'}: record {p.record}, field '{field}'")
    with pytest.raises(ValueError) as e: load_consistent_llms(tmp_path / "bad.json")
    assert str(e.value) == str(got.problems[0])  # strict: the first problem, nothing else loaded


def test_bad_files(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="x.json: file, field '\\(file\\)': expected a JSON list"): load_consistent_llms(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("[1,")
    assert load_consistent_llms(tmp_path / "y.json", strict=False).problems[0].reason.startswith("not readable JSON")
    with pytest.raises(ValueError, match="no such file"): load_consistent_llms(tmp_path / "z.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .json files"): load_consistent_llms(tmp_path / "empty")


def test_ten_megabytes_in_a_few_seconds(tmp_path):
    base = json.loads((DATA / "therapy_sample.json").read_text()) if DATA is not None else [_record(n=40) for _ in range(3)]
    copies = base * (10_000_000 // len(json.dumps(base)) + 1)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(copies))
    assert path.stat().st_size >= 10_000_000
    t0 = time.process_time()
    got = load_consistent_llms(path)
    assert time.process_time() - t0 < 5
    assert len(got) == len(copies) and got.problems == []
