"""Models, LoRA defaults, rendering and the PPG loss: small, fast checks of real behaviour."""
import json

import pytest
import torch

from ppg_nb.data import Conversation
from ppg_nb.model import (CHAT_TEMPLATE, LORA_TARGETS, add_lora, build_tokenizer, check_model_source, init_tiny_model,
                          load_model, lora_targets, save_model, tiny_family_model)
from ppg_nb.credit import Advantages, conversation_returns
from ppg_nb.render import agent_char_spans, collate, encode_conversation, encode_conversations, to_messages
from ppg_nb.model import token_logprobs
from ppg_nb.train import ppg_loss

TEXTS = ["I am 12 years old.", "I love drawing.", "How old are you?", "What is your hobby?", "You are the Student.",
         "Scenario: fractions", "Hello. Today we will learn about fractions."] * 20


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(TEXTS, vocab_size=320)


def _conv(n_rounds=3, rewards=None):
    turns = []
    for i in range(n_rounds):
        turns += [("Teacher", "How old are you?" if i % 2 == 0 else "What is your hobby?"),
                  ("Student", "I am 12 years old." if i % 2 == 0 else "I love drawing.")]
    return Conversation(persona="I am 12 years old. I love drawing.", scenario="fractions", role="Student", turns=turns,
                        agent_turns=list(range(1, 2 * n_rounds, 2)),
                        rewards=rewards if rewards is not None else [1.0] * n_rounds)


def test_tiny_model_round_trips_through_from_pretrained(tmp_path, tok):
    model = init_tiny_model(tok, seed=1, hidden_size=32, num_layers=1)
    save_model(model, tok, tmp_path / "m")
    model2, tok2 = load_model(str(tmp_path / "m"))
    x = torch.tensor([tok("I love drawing.")["input_ids"]])
    assert torch.equal(model.eval()(x).logits, model2.eval()(x).logits)
    assert tok2.chat_template == CHAT_TEMPLATE and tok2.padding_side == "left"
    assert (tmp_path / "m" / "model.safetensors").exists()


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma"])
def test_lora_defaults_cover_attention_and_mlp(arch):
    model = add_lora(tiny_family_model(arch), r=2, alpha=4)
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A" in n}
    # 2 layers x 7 projections, every one of them adapted
    assert len(adapted) == 2 * len(LORA_TARGETS[arch])
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())


def test_lora_fallback_and_errors():
    class Net(torch.nn.Module):
        def __init__(self): super().__init__(); self.a, self.head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert lora_targets(Net()) == ["a", "head"]
    with pytest.raises(ValueError, match="not modules"): add_lora(tiny_family_model("llama"), targets=["nope"])


def test_model_dir_checks(tmp_path, tok):
    with pytest.raises(ValueError, match="does not exist"): check_model_source(str(tmp_path / "missing"))
    (tmp_path / "cfg").mkdir()
    init_tiny_model(tok, hidden_size=32, num_layers=1).config.save_pretrained(tmp_path / "cfg")
    with pytest.raises(ValueError, match="no tokenizer"): check_model_source(str(tmp_path / "cfg"))
    plain = build_tokenizer(TEXTS, vocab_size=320); plain.chat_template = None
    plain.save_pretrained(tmp_path / "cfg")
    cfg = json.loads((tmp_path / "cfg" / "tokenizer_config.json").read_text())
    assert not cfg.get("chat_template")
    with pytest.raises(ValueError, match="no chat template"): check_model_source(str(tmp_path / "cfg"))


def test_agent_spans_are_exactly_the_agent_turns(tok):
    conv = _conv()
    [ex], stats = encode_conversation(conv, tok, max_length=512)
    for j, text in enumerate(conv.agent_lines):
        assert tok.decode([t for t, o in zip(ex.input_ids, ex.turn_of_token) if o == j]) == text + "<|end|>"
    assert stats.truncated == 0


def test_truncation_trains_every_turn_once_within_max_length(tok):
    conv = _conv(n_rounds=12, rewards=[0.5] * 12)
    examples, stats = encode_conversation(conv, tok, max_length=110)
    assert sorted(j for ex in examples for j in ex.turns) == list(range(12))
    assert all(len(ex.input_ids) <= 110 for ex in examples)
    assert all(tok.decode(ex.input_ids[:3]).startswith("<|bos|><|system|>You") for ex in examples)
    assert stats.truncated == 1 and stats.windows == len(examples) > 1


def test_returns_advantages_and_loss_gradient(tok):
    convs = [_conv(rewards=[1.0, 0.0, 1.0]), _conv(rewards=[0.0, 0.0, 1.0])]
    G = conversation_returns(convs, "kstep", K=2)
    assert G.tolist() == [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    examples, _ = encode_conversations(convs, tok, max_length=512)
    batch = collate(examples, tok.pad_token_id, G)
    adv = Advantages("batch")(batch.turn_returns, batch.turn_mask)
    assert adv.tolist() == [[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]]
    # d loss / d logprob of a token = -advantage of its turn / number of agent tokens
    logprobs = torch.zeros(batch.turn_of_target.shape, requires_grad=True)
    ppg_loss(logprobs, batch.turn_of_target, adv, "token").backward()
    first = batch.turn_of_target == 0
    assert torch.allclose(logprobs.grad[0][first[0]], torch.tensor(-0.5 / batch.n_tokens))
    assert torch.allclose(logprobs.grad[1][first[1]], torch.tensor(0.5 / batch.n_tokens))
    assert (logprobs.grad[batch.turn_of_target < 0] == 0).all()


def test_token_logprobs_match_log_softmax():
    logits, ids = torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))
    mask = torch.rand(2, 5) > 0.3
    ref = logits.log_softmax(-1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    assert torch.allclose(token_logprobs(logits, ids, mask)[mask], ref[mask], atol=1e-6)


def test_gemma_style_template_folds_system_prompt():
    tok = build_tokenizer(TEXTS, vocab_size=320)
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
                         "{% for m in messages %}{{ '<t>' + m['role'] + '\n' + m['content'] + '<e>\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '<t>assistant\n' }}{% endif %}")
    conv = _conv(n_rounds=2)
    [ex], _ = encode_conversations([conv], tok, max_length=512)
    assert tok.decode([t for t, o in zip(ex.input_ids, ex.turn_of_token) if o == 1]) == "I love drawing.<e>\n"
    assert to_messages(conv, system_role=False)[0]["content"].startswith("You are the Student.")
