"Tests of ppg_nb.theory (the exact lab and the trade-off experiment) and ppg_nb.widgets (static and live explorer)."
import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st

import ppg_nb.theory as theory
from ppg_nb.core import credit_matrix, partial_returns
from ppg_nb.theory import (ExactEnv, Trajectories, exact_ascent, gradient_errors, hoeffding_bound, tradeoff_claims,
                           tradeoff_grid, tradeoff_table)

from ppg_nb.claims import CLAIMS
CLASSES = [("full", {}), ("greedy", {}), ("kstep", {"K": 2}), ("segment", {"length": 2}),
           ("custom", {"matrix": torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 0, 1], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]])})]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("context", ["none", "previous"])
def test_contract(context):
    env = ExactEnv(n=5, n_actions=3, horizon=2, context=context, seed=0)
    theta = env.theta0()
    assert isinstance(theta, torch.Tensor) and theta.shape == (5, 1 if context == "none" else 3, 3)
    value = env.exact_value(theta)
    assert value.shape == () and 0 < value.item() < env.optimum() <= 5
    for policy, params in CLASSES:
        assert env.exact_gradient(theta, policy, **params).shape == theta.shape
    trajs = env.sample(theta, 7, seed=3)
    assert isinstance(trajs, Trajectories) and len(trajs) == 7 and trajs.rewards.shape == (7, 5)
    assert env.estimate_gradient(trajs, theta, "kstep", K=2).shape == theta.shape
    df = tradeoff_grid(env, Ns=[4, 8], Ks=[1, 5], seeds=[0], steps=3)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == ["N", "K", "seed", "value", "optimum"] and len(df) == 4
    assert (df.optimum == env.optimum()).all()


def test_optimum_is_best_sequence_and_reachable():
    env = ExactEnv(n=5, seed=4)
    best = torch.tensor(env.best_sequence())
    assert math.isclose(env.returns[(best * env._powers).sum()].item(), env.optimum())
    assert env.returns.max().item() == env.optimum()
    logits = torch.nn.functional.one_hot(best, 3).double()[:, None, :] * 50
    assert abs(env.exact_value(logits).item() - env.optimum()) < 1e-9


@pytest.mark.parametrize("context", ["none", "previous"])
def test_full_gradient_is_gradient_of_J(context):
    env = ExactEnv(n=4, context=context, seed=1)
    theta = env.random_theta(seed=2)
    closed = env.exact_gradient(theta, "full")
    t = theta.clone().requires_grad_(True)
    env.exact_value(t).backward()
    assert torch.allclose(closed, t.grad, atol=1e-12)
    eps = 1e-6
    for k in range(theta.numel()):
        step = torch.zeros(theta.numel(), dtype=theta.dtype)
        step[k] = eps
        step = step.view_as(theta)
        fd = (env.exact_value(theta + step) - env.exact_value(theta - step)) / (2 * eps)
        assert abs(fd.item() - closed.view(-1)[k].item()) < 1e-8


@settings(max_examples=12, deadline=None)
@given(n=st.integers(2, 5), A=st.integers(2, 3), h=st.integers(1, 4), context=st.sampled_from(["none", "previous"]),
       seed=st.integers(0, 1000))
def test_exact_gradient_matches_autograd_property(n, A, h, context, seed):
    env = ExactEnv(n=n, n_actions=A, horizon=min(h, n), context=context, seed=seed)
    theta = env.random_theta(seed)
    t = theta.clone().requires_grad_(True)
    env.exact_value(t).backward()
    assert torch.allclose(env.exact_gradient(theta, "full"), t.grad, atol=1e-11)
    assert ((env.mean_rewards >= 0) & (env.mean_rewards <= 1)).all()


def test_past_rewards_contribute_zero_and_reward_to_go_lowers_variance():
    env = ExactEnv(n=5, context="previous", seed=3)
    theta = env.random_theta(seed=4)
    past, _ = env.exact_moments(theta, weights=torch.ones(5, 5).tril(-1))
    assert past.abs().max() < 1e-14
    mean_all, var_all = env.exact_moments(theta, weights=torch.ones(5, 5))
    mean_rtg, var_rtg = env.exact_moments(theta, "full")
    assert torch.allclose(mean_all, mean_rtg, atol=1e-14)
    assert var_rtg.sum() < var_all.sum()


@pytest.mark.parametrize("h", [1, 2, 3])
def test_kstep_exact_iff_K_at_least_horizon(h):
    env = ExactEnv(n=5, horizon=h, seed=h)
    theta = env.random_theta(seed=0)
    full = env.exact_gradient(theta, "full")
    for K in range(1, 6):
        gap = (env.exact_gradient(theta, "kstep", K=K) - full).abs().max().item()
        assert gap < 1e-12 if K >= h else gap > 1e-3, (K, gap)


def test_previous_action_counterexample():
    env = ExactEnv(n=5, horizon=2, context="previous", seed=2)
    theta = env.random_theta(seed=0)
    full = env.exact_gradient(theta, "full")
    assert (env.exact_gradient(theta, "kstep", K=2) - full).abs().max() > 1e-3   # K = h is not exact any more
    assert (env.exact_gradient(theta, "kstep", K=5) - full).abs().max() < 1e-12
    t0 = env.theta0()                                                           # logits that ignore the context
    assert torch.allclose(env.exact_gradient(t0, "kstep", K=2), env.exact_gradient(t0, "full"), atol=1e-12)


def test_reward_reach_is_horizon():
    for h in (1, 2, 4):
        env = ExactEnv(n=5, horizon=h, seed=0)
        assert torch.equal(theory.reward_reach(env), credit_matrix(5, "kstep", K=h))


def test_traps_make_myopic_and_planning_optima_differ():
    for seed in range(5):
        env = ExactEnv(n=5, horizon=2, seed=seed)
        limit = exact_ascent(env, Ks=[1, 2, 5], steps=50)
        assert limit[1] < limit[2] - 0.05 and abs(limit[2] - limit[5]) < 1e-9


@pytest.mark.parametrize("policy,params", CLASSES)
def test_estimate_is_unbiased_with_exact_variance(policy, params):
    env = ExactEnv(n=5, context="previous", seed=5)
    theta = env.random_theta(seed=6)
    exact, var = env.exact_moments(theta, policy, **params)
    N, draws = 16, 200
    est = torch.stack([env.estimate_gradient(env.sample(theta, N, s), theta, policy, **params) for s in range(draws)])
    used = var > 0
    z = (est.mean(0) - exact)[used] / (var[used] / (N * draws)).sqrt()
    assert z.abs().max() < 4.5
    ratio = (est.var(0)[used] / (var[used] / N)).mean().item()
    assert 0.8 < ratio < 1.25


def test_estimate_uses_core_partial_returns(monkeypatch):
    calls = []

    def spy(rewards, policy, **kw):
        calls.append(policy)
        return partial_returns(rewards, policy, **kw)

    monkeypatch.setattr(theory, "partial_returns", spy)
    env = ExactEnv(n=4)
    env.estimate_gradient(env.sample(env.theta0(), 3, seed=0), env.theta0(), "kstep", K=2)
    tradeoff_grid(env, Ns=[2], Ks=[1, 3], seeds=[0], steps=2)
    assert calls[0] == "kstep" and len(calls) == 1 + 2 * 2


def test_sample_follows_policy_and_is_seeded():
    env = ExactEnv(n=3, n_actions=2, horizon=2, context="previous", seed=5)
    theta = env.random_theta(seed=6)
    a = env.sample(theta, 50_000, seed=1)
    assert torch.equal(a.actions, env.sample(theta, 50_000, seed=1).actions)
    freq = torch.bincount((a.actions * env._powers).sum(-1), minlength=8).double() / 50_000
    assert (freq - env.sequence_probs(theta)).abs().max() < 0.01


def test_hoeffding_bound_holds():
    env = ExactEnv()
    for N in (16, 128):
        errs = gradient_errors(env, N, seeds=range(60), delta=0.1)
        assert ((errs.error > errs.bound).groupby(errs.K).mean() <= 0.1).all()
        assert errs.groupby("K").bound.first().is_monotonic_increasing
    M = int(credit_matrix(6, "full").sum())
    assert math.isclose(hoeffding_bound(credit_matrix(6, "full"), 100, 18, 0.1), M * math.sqrt(2 * math.log(360) / 100))


def test_smaller_set_can_have_larger_variance_for_a_coordinate():
    env = ExactEnv(n=2, n_actions=3, horizon=2, decay=1.0, payoff=[[0, 0, 1], [0, 0, 0]], effect=[[0, 1, 0], [0, 0, 0]])
    theta = env.theta0()
    theta[0, 0] = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64).log()
    v1, v2 = env.exact_moments(theta, "kstep", K=1)[1], env.exact_moments(theta, "kstep", K=2)[1]
    assert math.isclose(v1[0, 0, 0].item(), 0.0216, abs_tol=1e-12) and math.isclose(v2[0, 0, 0].item(), 0.0189, abs_tol=1e-12)


# the trade-off: defaults and settings that were not used to tune the design (20 seeds each, about 1 s each)
@pytest.mark.parametrize("kwargs", [dict(), dict(horizon=2, seed=7), dict(n=5, seed=9), dict(n_actions=2, seed=11),
                                    dict(context="previous", seed=13)], ids=lambda kw: str(kw) or "defaults")
def test_tradeoff_claims(kwargs):
    df = tradeoff_grid(ExactEnv(**kwargs), seeds=range(20))
    claims = tradeoff_claims(df)
    assert all(claims[c] for c in CLAIMS), (claims, tradeoff_table(df).round(3))


def test_tradeoff_grid_is_deterministic_and_batch_independent():
    env = ExactEnv(n=4, horizon=2)
    a = tradeoff_grid(env, Ns=[4, 16], Ks=[1, 2, 4], seeds=[0, 3], steps=5)
    pd.testing.assert_frame_equal(a, tradeoff_grid(env, Ns=[4, 16], Ks=[1, 2, 4], seeds=[0, 3], steps=5))
    alone = tradeoff_grid(env, Ns=[16], Ks=[2], seeds=[3], steps=5)
    assert math.isclose(alone.value.item(), a.query("N == 16 and K == 2 and seed == 3").value.item(), abs_tol=1e-12)


def test_issue_grid_has_every_cell():
    "The issue's 4 x 5 x 5 grid (its time is measured by tests/benchmarks/bench_tradeoff.py, not here)."
    env = ExactEnv(n=6, n_actions=3)
    df = tradeoff_grid(env, Ns=(4, 16, 64, 256), Ks=[1, 2, 3, 4, 6], seeds=range(5))
    assert len(df) == 4 * 5 * 5 and not df.duplicated(["N", "K", "seed"]).any()
    assert set(df.columns) >= {"N", "K", "seed", "value", "optimum"} and (df.value <= df.optimum + 1e-9).all()


@pytest.mark.parametrize("call,message", [
    (lambda: ExactEnv(n=9, n_actions=4), "sequences is more than 65536"),
    (lambda: ExactEnv(context="past"), "context must be one of"),
    (lambda: ExactEnv(horizon=0), "horizon must be >= 1"),
    (lambda: ExactEnv(noise="gauss"), "noise must be one of"),
    (lambda: ExactEnv(trap=-1), "trap must be in"),
    (lambda: ExactEnv().exact_value(torch.zeros(6, 3)), "theta must have shape"),
    (lambda: ExactEnv().sample(ExactEnv().theta0(), 0, seed=0), "N must be >= 1"),
    (lambda: ExactEnv().exact_gradient(ExactEnv().theta0(), "kstep"), "needs K"),
    (lambda: ExactEnv().exact_moments(ExactEnv().theta0(), weights=torch.ones(3, 3)), "weights must have shape (6, 6)"),
    (lambda: tradeoff_grid(ExactEnv(), Ns=[]), "Ns must not be empty"),
    (lambda: tradeoff_grid(ExactEnv(), Ks=[0]), "Ks[0] must be >= 1"),
    (lambda: tradeoff_grid(ExactEnv(), lr=0), "lr must be in (0"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=None) as info:
        call()
    assert message in str(info.value)


def test_widgets_static_and_live():
    import ipywidgets
    import plotly.graph_objects as go
    from ppg_nb.widgets import MAX_N, TradeoffExplorer, explore_tradeoff, has_widget_frontend, tradeoff_figure
    assert not has_widget_frontend()
    fig = explore_tradeoff()                                              # no kernel here: the static figure
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget) and len(fig.data) == 3 + MAX_N + 3 + 3 + 1
    assert fig.data[-1].name == "K=auto" and not fig.data[-1].visible                 # the auto line: there, hidden until asked
    assert isinstance(explore_tradeoff(static=False), ipywidgets.VBox)
    ex = TradeoffExplorer(n=5, horizon=2, K=2, N=16)
    before = ex.figure.data[3 + MAX_N + 1].y
    ex.sliders["K"].value = 3
    assert ex.figure.data[3 + MAX_N + 1].y != before and ex.last_redraw_s < 2.0
    assert tuple(ex.figure.data[3 + MAX_N + 1].y) == tuple(tradeoff_figure(5, 2, 3, 16).data[3 + MAX_N + 1].y)
    assert [s.description for s in ex.sliders.values()] == ["K", "N", "horizon", "n"]
    assert "ppg-tradeoff-explorer" in ex.box._dom_classes
    ex.auto.value = True                                                  # the checkbox draws the rule's line, K within 1..n
    assert ex.figure.data[-1].visible and all(1 <= k <= 5 for k in ex.figure.layout.meta["auto K"]) and ex.state["auto"]
