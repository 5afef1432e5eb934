"""Property tests of ppg_nb.core and ppg_nb.decompose against their definitions."""
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

from ppg_nb.core import credit_matrix, partial_returns, reference_partial_returns, action_indices, reward_indices
from ppg_nb.decompose import decompose_rewards


@st.composite
def policies(draw, n):
    policy = draw(st.sampled_from(["full", "greedy", "kstep", "segment_length", "segment_boundaries", "custom"]))
    if policy == "kstep": return "kstep", {"K": draw(st.integers(1, n + 2))}
    if policy == "segment_length": return "segment", {"length": draw(st.integers(1, n + 1))}
    if policy == "segment_boundaries":
        return "segment", {"boundaries": sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1))) if n > 1 else []}
    if policy == "custom":
        bits = draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))
        return "custom", {"matrix": torch.triu(torch.tensor(bits).reshape(n, n))}
    return policy, {}


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(1, 40), st.integers(0, 3), st.sampled_from([1.0, 0.95, 0.5, 0.0]))
def test_partial_returns_match_the_definition(data, n, batch, gamma):
    policy, params = data.draw(policies(n))
    shape = (batch, n) if batch else (n,)
    rewards = torch.randn(shape, generator=torch.Generator().manual_seed(n * 7 + batch), dtype=torch.float64)
    got = partial_returns(rewards, policy, gamma=gamma, **params)
    torch.testing.assert_close(got, reference_partial_returns(rewards, policy, gamma, **params))


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([7, 64, 128, 129, 200]), st.booleans())
def test_segment_returns_on_both_routes(data, n, equal):
    "On CPU, segments of n <= SEGMENT_MATMUL_STEPS are a matmul and longer ones prefix sums: both are the definition, both refuse inf/nan."
    if equal: params = {"length": data.draw(st.integers(1, n))}
    else: params = {"boundaries": sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=6)))}
    rewards = torch.rand(3, n, generator=torch.Generator().manual_seed(n))
    torch.testing.assert_close(partial_returns(rewards, "segment", **params).double(),
                               reference_partial_returns(rewards, "segment", **params).double(), rtol=1e-5, atol=1e-4)
    where = [data.draw(st.integers(0, 2)), data.draw(st.integers(0, n - 1))]
    rewards[tuple(where)] = data.draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    with pytest.raises(ValueError, match=re.escape(f"rewards{where}")): partial_returns(rewards, "segment", **params)


@settings(max_examples=100, deadline=None)
@given(st.data(), st.integers(1, 30))
def test_mask_equals_truncation(data, n):
    policy, params = data.draw(policies(n))
    if policy == "custom": params = {"matrix": params["matrix"]}
    length = data.draw(st.integers(1, n))
    rewards = torch.rand(n, dtype=torch.float64)
    mask = torch.arange(n) < length
    got = partial_returns(rewards.masked_fill(~mask, float("inf")), policy, mask=mask, **params)
    expected = reference_partial_returns(rewards * mask, policy, **params) * mask
    torch.testing.assert_close(got, expected)
    assert (got[length:] == 0).all()


@given(st.integers(1, 25), st.integers(1, 30))
def test_kstep_nests_between_greedy_and_full(n, K):
    C = credit_matrix(n, "kstep", K=K)
    assert (credit_matrix(n, "greedy") <= C).all() and (C <= credit_matrix(n, "full")).all()
    assert C.sum(1).tolist() == [min(K, n - t) for t in range(n)]


@given(st.integers(2, 20), st.data())
def test_segment_rows_end_at_segment_ends(n, data):
    boundaries = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=n - 1)))
    R = reward_indices(credit_matrix(n, "segment", boundaries=boundaries))
    ends = boundaries + [n]
    for t, row in enumerate(R):
        end = next(e for e in ends if e > t)
        assert row == list(range(t, end))


def test_column_view_is_transpose():
    C = credit_matrix(6, "segment", length=4)
    S = action_indices(C)
    assert all((t in S[i]) == bool(C[t, i]) for t in range(6) for i in range(6))


def test_float32_long_trajectories_are_accurate():
    torch.manual_seed(1)
    rewards = torch.rand(2, 4096, dtype=torch.float64)
    for policy, params in [("greedy", {}), ("kstep", {"K": 3}), ("segment", {"length": 100}), ("full", {})]:
        exact = reference_partial_returns(rewards, policy, **params)
        scale = reference_partial_returns(rewards, policy, **params).abs().clamp(min=1)  # rewards >= 0: sum |r| = G
        error = (partial_returns(rewards.float(), policy, **params).double() - exact).abs() / scale
        assert error.max() <= 1e-4, (policy, error.max())


@pytest.mark.parametrize("bad, message", [
    (lambda: partial_returns(torch.tensor([0., float("nan")]), "full"), "rewards[1] = nan"),
    (lambda: partial_returns(torch.rand(2, 3), "greedy", mask=torch.ones(3, 2, dtype=torch.bool)), "mask shape"),
    (lambda: credit_matrix(4, "segment", boundaries=[2, 1]), "strictly increasing"),
    (lambda: credit_matrix(4, "segment", boundaries=[4]), "outside 1..3"),
    (lambda: credit_matrix(4, "kstep", K=0), "K must be >= 1"),
    (lambda: credit_matrix(4, "custom", matrix=torch.ones(4, 4, dtype=torch.bool)), "past reward"),
    (lambda: credit_matrix(4, "custom", matrix=torch.ones(3, 3, dtype=torch.bool)), "shape (4, 4)"),
    (lambda: credit_matrix(4, "nope"), "unknown policy"),
    (lambda: credit_matrix(4, "segment", length=0), "length must be >= 1"),
    (lambda: decompose_rewards(torch.tensor([0.5, -1.0])), "non-negative"),
    (lambda: decompose_rewards(torch.tensor([float("nan"), 1.0])), "scores[0] = nan"),
])
def test_bad_input_is_refused_clearly(bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        bad()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=30), st.sampled_from(["capped_max", "suffix_min"]))
def test_lemma1_rewards_nonnegative_and_sum_to_final_score(scores, method):
    scores = torch.tensor(scores, dtype=torch.float64)
    rewards = decompose_rewards(scores, method)
    assert (rewards >= 0).all()
    torch.testing.assert_close(rewards.sum(), scores[-1])
    if (torch.diff(scores) >= 0).all():  # monotone: the plain differences
        torch.testing.assert_close(rewards, torch.diff(scores, prepend=torch.zeros(1, dtype=torch.float64)))


@pytest.mark.parametrize("policy, params", [("full", {}), ("kstep", {"K": 2}), ("kstep", {"K": 5}),
                                            ("segment", {"length": 2}), ("segment", {"boundaries": [1, 4]})])
def test_non_contiguous_and_integer_inputs(policy, params):
    rewards = torch.rand(7, 5, dtype=torch.float64).T  # (5, 7), not contiguous
    torch.testing.assert_close(partial_returns(rewards, policy, **params),
                               reference_partial_returns(rewards.contiguous(), policy, **params))
    counts = torch.randint(0, 3, (4, 7))  # integer rewards are promoted to the default float dtype
    torch.testing.assert_close(partial_returns(counts, policy, **params),
                               reference_partial_returns(counts, policy, **params).float())
