"""Tests for ppg_nb.personas: the claim language, personas, partner simulator, behavior policy, rule judge, datasets."""
import math
import time
from dataclasses import replace

import pytest

from ppg_nb.data import Conversation
from ppg_nb.personas import (ATTRIBUTES, DOMAINS, FILLER_WORDS, BehaviorAgent, DomainSpec, Persona, behavior_line,
                             clean_agent_line, consistency_by_turn, consistency_residuals, conversation_seed,
                             correction_advantage, judge_turns, make_dataset, natural_k, parse_line, partner_line,
                             persona_attributes, question_schedule, read_partner_line, render_claim, render_you,
                             sample_personas, score_conversation, simulate, simulate_batch, tokenize_words,
                             truthful_agent, vocabulary)


def test_domains_contract():
    assert {"education", "therapy", "chatting"} <= set(DOMAINS)
    assert all(isinstance(s, DomainSpec) for s in DOMAINS.values())
    assert DOMAINS["education"].reach < DOMAINS["chatting"].reach < DOMAINS["therapy"].reach


def test_language_is_exactly_invertible():
    n = 0
    for spec in DOMAINS.values():
        for a, values in spec.values:
            for v in values:
                claim = render_claim(a, v)
                assert parse_line(claim) == (((a, v),), 0)
                for f in FILLER_WORDS:
                    assert parse_line(f"{f}, {claim[0].lower() if not claim.startswith('I ') else 'I'}{claim[1:]}")[0] == ((a, v),)
                assert read_partner_line(f"You said {render_you(a, v)}. Is that right?") == (a, v)
                n += 1
    assert n > 200
    assert parse_line("Sure. I am 19 years old. I have a pet cat.") == ((("age", "19"), ("pet", "cat")), 0)
    assert parse_line("I am a dragon. Thanks.") == ((), 1)
    assert parse_line("Yes , I live with my sister .") == ((("home", "my sister"),), 0)  # space before punctuation


def test_personas_deterministic_and_prefix_stable():
    a, b = sample_personas("therapy", 50, seed=3), sample_personas("therapy", 10, seed=3)
    assert [p.text for p in a[:10]] == [p.text for p in b]
    assert [p.text for p in sample_personas("therapy", 10, seed=4)] != [p.text for p in b]
    for p in a:
        assert persona_attributes(p.text) == p.attributes and set(p.attributes) == set(DOMAINS["therapy"].attributes)
    for p in sample_personas("chatting", 20, seed=0):
        assert p.role == p.attributes["name"] and p.partner != p.role


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_make_dataset_shape_determinism_and_contract(domain):
    data = make_dataset(domain, 30, 12, seed=7)
    assert len(data) == 30 and all(isinstance(c, Conversation) for c in data)
    for c in data:
        assert len(c.turns) == 24 and c.agent_turns == list(range(1, 24, 2))  # partner first, then agent, x 12
        assert c.turns[0][0] == c.meta["partner"] and all(c.turns[i][0] == c.role for i in c.agent_turns)
        assert len(c.rewards) == 12 and all(0 <= r <= 1 for r in c.rewards)
        assert c.rewards == score_conversation(c)
        assert c.meta["domain"] == domain
    again = make_dataset(domain, 30, 12, seed=7)
    assert [(c.turns, c.rewards) for c in again] == [(c.turns, c.rewards) for c in data]
    assert [c.turns for c in make_dataset(domain, 30, 12, seed=8)] != [c.turns for c in data]
    # make_dataset is simulate() with the behavior agent
    p = sample_personas(domain, 30, seed=7)[11]
    one = simulate(domain, p, BehaviorAgent(domain), 12, seed=conversation_seed(7, 11))
    assert (one.turns, one.rewards) == (data[11].turns, data[11].rewards)


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_truthful_agent_is_perfectly_consistent(domain):
    convs = simulate_batch(domain, sample_personas(domain, 20, seed=1), lambda cs: [truthful_agent(c) for c in cs], 15, seed=1)
    assert all(r == 1.0 for c in convs for r in c.rewards)


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_behavior_drifts(domain):
    curve = consistency_by_turn(make_dataset(domain, 300, 20, seed=0))
    assert curve[0] > 0.9 and curve[-1] < curve[0] - 0.25
    assert sum(curve[10:]) < sum(curve[:10]) - 1.0
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert last < first - 0.2


def test_partner_depends_only_on_domain_persona_seed_and_history():
    spec, persona = DOMAINS["chatting"], sample_personas("chatting", 1, seed=2)[0]
    lines = ["I live in Miami.", "I am 30 years old.", "I have a pet dog."]
    def conv_with(agent_lines, seed):
        turns = [(persona.partner, partner_line(spec, persona, None, seed))]
        conv = Conversation(persona.text, persona.scenario, persona.role, turns, [], meta={"seed": seed})
        for line in agent_lines:
            conv.turns.append((persona.role, line)); conv.agent_turns.append(len(conv.turns) - 1)
            conv.turns.append((persona.partner, partner_line(spec, persona, conv, seed)))
        return conv
    a, b = conv_with(lines, 5), conv_with(lines, 5)
    assert a.turns == b.turns  # same inputs, same partner
    assert conv_with(lines, 6).turns != a.turns  # another seed, another partner
    # an off-persona claim is quoted back for `reach` rounds, then the partner moves on
    truth = persona.attributes["city"]
    slip = next(c for c in spec.values_of("city") if c != truth)
    conv = conv_with([f"I live in {slip}."] + [f"I live in {truth}."] * 5, 9)
    quotes = [read_partner_line(conv.turns[i + 1][1]) for i in conv.agent_turns]
    assert quotes[:spec.reach] == [("city", slip)] * spec.reach and quotes[spec.reach][1] is None


def test_questions_follow_a_schedule_without_repeats_within_reach():
    for spec in DOMAINS.values():
        schedule = question_schedule(spec, 123)
        assert sorted(schedule) == sorted(spec.asked) and len(schedule) > spec.reach


def test_rule_judge_cases():
    turns = []
    for q, a in [("How old are you?", "I am 19 years old."), ("What is your hobby?", "I love hiking."),
                 ("You said you love hiking. Is that right?", "Yes, I love hiking."),
                 ("You said you love hiking. Is that right?", "Actually, I love drawing."),
                 ("How old are you?", "I love drawing."), ("How old are you?", "I am a wizard. I am 19 years old."),
                 ("Tell me about yourself.", "Hmm.")]:
        turns += [("Teacher", q), ("Student", a)]
    c = Conversation("I am 19 years old. I love drawing.", "", "Student", turns, list(range(1, 14, 2)),
                     meta={"judge": {"window": 2}})
    assert score_conversation(c) == pytest.approx([1.0, 0.6, 0.6, 0.4, 0.3, 0.5, 0.3])
    assert score_conversation(c, window=0)[3] == pytest.approx(1.0)
    d = judge_turns(c)[3]
    assert d["claims"] == (("hobby", "drawing"),) and d["prompt_ok"] == [True] and d["line_ok"] == [False]
    with pytest.raises(ValueError, match="pass window="): score_conversation(replace(c, meta={}))
    with pytest.raises(ValueError, match="not in the synthetic claim language"):
        score_conversation(replace(c, persona="I am a wizard."))


def test_batched_agent_one_call_per_round_and_cleaning():
    calls = []
    def agent_batch(convs):
        calls.append(len(convs))
        return [f"{c.role}: {truthful_agent(c)}\nTeacher: more?" for c in convs]
    convs = simulate_batch("education", sample_personas("education", 7, seed=0), agent_batch, 6, seed=0)
    assert calls == [7] * 6
    assert all(r == 1.0 for c in convs for r in c.rewards)
    assert all(not t.startswith("Student:") and "\n" not in t for c in convs for t in c.agent_lines)
    assert clean_agent_line("  Student: I am 12 years old.\nTeacher: hi", "Student") == "I am 12 years old."
    assert clean_agent_line("I am 12 years old.", "Student") == "I am 12 years old."


def test_vocabulary_is_closed_and_small():
    assert len(vocabulary()) < 400
    for name in DOMAINS:
        words = set(vocabulary(name))
        for c in make_dataset(name, 200, 20, seed=1):
            for text in [c.persona, c.role] + [x for turn in c.turns for x in turn]:
                assert set(tokenize_words(text)) <= words, text


def test_speed():
    t0 = time.process_time()
    data = make_dataset("chatting", 1000, 20, seed=0)
    seconds = time.process_time() - t0
    assert len(data) == 1000 and seconds < 6, seconds  # ~1 s on a quiet core: 10,000 x 20 in ~10 s


def test_residuals_and_trap_follow_the_reach():
    ks = {}
    for name, spec in DOMAINS.items():
        r = consistency_residuals(name, n_conversations=25, n_turns=16, seed=0)
        assert r[1] > 0.1 * r[0] and max(r[spec.reach + 6:]) < 0.15 * r[0], (name, r)
        ks[name] = natural_k(r, tol=0.1)
        adv = correction_advantage(name, n_conversations=60, n_turns=16, seed=0)
        crossover = next(K for K, a in enumerate(adv, start=1) if a > 0)
        assert adv[0] < 0 and crossover == math.floor(1.5 * spec.reach) + 1, (name, adv)
    assert ks["education"] < ks["chatting"] < ks["therapy"], ks


def test_bad_input():
    with pytest.raises(ValueError, match="unknown domain 'cooking'"): make_dataset("cooking", 2)
    with pytest.raises(ValueError, match="n_turns must be an integer >= 1"): make_dataset("education", 2, 0)
    with pytest.raises(ValueError, match="n_conversations must be an integer >= 0"): make_dataset("education", 2.5)
    with pytest.raises(ValueError, match="n must be an integer >= 0"): sample_personas("education", -1)
    ps = sample_personas("education", 3)
    with pytest.raises(ValueError, match="must return a list of 3 strings"): simulate_batch("education", ps, lambda cs: ["x"], 2)
    with pytest.raises(ValueError, match="returned a int for conversation 0 at turn 0"):
        simulate_batch("education", ps[:1], lambda cs: [3], 2)
    with pytest.raises(ValueError, match="personas\\[0\\] is a str"): simulate_batch("education", ["x"], lambda cs: ["x"], 2)
    with pytest.raises(ValueError, match="lacks attribute"): simulate("therapy", ps[0], truthful_agent, 2)
    with pytest.raises(ValueError, match="seed must be an integer"): make_dataset("education", 2, seed=0.5)
    with pytest.raises(ValueError, match="seed\\[1\\] must be an integer"): simulate_batch("education", ps[:2], lambda cs: ["x"] * 2, 1, seed=[1, None])
    with pytest.raises(ValueError, match="reach must be an integer >= 1"): replace(DOMAINS["education"], reach=0)
    with pytest.raises(ValueError, match="reach must be below the number of asked attributes"): replace(DOMAINS["education"], reach=5)
    with pytest.raises(ValueError, match="drift must be a number in \\[0, 1\\]"): replace(DOMAINS["education"], drift=-0.1)


def test_custom_spec_knobs_travel_with_the_data():
    spec = replace(DOMAINS["therapy"], reach=2, drift=0.0)
    data = make_dataset(spec, 50, 10, seed=0)
    assert data[0].meta["judge"]["window"] == 2
    assert sum(consistency_by_turn(data)) / 10 > sum(consistency_by_turn(make_dataset("therapy", 50, 10, seed=0))) / 10
