import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gasil_wrappers import Discriminator, GASILConfig, GASILState
from gasil_wrappers.discriminator import DiscriminatorForward, softplus


def known_discriminator(final_bias=0.3, reward_form="neg_log_d"):
    """D with 2 inputs, one hidden unit: logit = 2*tanh(0.5*x0 - 1.0*x1 + 0.1) + final_bias."""
    d = Discriminator(2, (1,), reward_form=reward_form, rng=np.random.default_rng(0))
    with torch.no_grad():
        first, last = d.net[0], d.net[2]
        first.weight.copy_(torch.tensor([[0.5, -1.0]]))
        first.bias.copy_(torch.tensor([0.1]))
        last.weight.copy_(torch.tensor([[2.0]]))
        last.bias.copy_(torch.tensor([final_bias]))
    d.refresh_snapshot()  # normalizer is still mean 0, var 1
    return d


def test_numpy_forward_matches_hand_computation():
    d = known_discriminator()
    x = np.array([0.7, -0.2])
    expected_logit = 2 * math.tanh(0.5 * 0.7 + 1.0 * 0.2 + 0.1) + 0.3
    assert abs(d.logits(x) - expected_logit) < 1e-6
    assert abs(d.reward(x) - math.log1p(math.exp(-expected_logit))) < 1e-6
    rows = np.array([[0.7, -0.2], [0.0, 0.0]])
    np.testing.assert_allclose(d.logits(rows), [expected_logit, 2 * math.tanh(0.1) + 0.3], atol=1e-6)


def test_numpy_forward_matches_torch_forward():
    d = Discriminator(5, (64, 64), rng=np.random.default_rng(1))
    x = np.random.default_rng(2).normal(size=(32, 5))
    torch_logits = d.net(torch.as_tensor(d.normalize(x), dtype=torch.float32)).squeeze(-1).detach().numpy()
    np.testing.assert_allclose(d.logits(x), torch_logits, atol=1e-5)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 70), st.floats(0.1, 30.0), st.integers(0, 2**31 - 1))
def test_batched_forward_matches_one_row_forward(m, spread, seed):
    """The batched path (feature-major work arrays, cached up to 64 rows) gives each row's one-row value,
    also where the input clip binds (``spread`` reaches far past ±input_clip std)."""
    rng = np.random.default_rng(seed)
    d = Discriminator(5, (16, 8), rng=rng)
    d.normalizer.update(rng.normal(1.0, 2.0, (100, 5)))
    d.refresh_snapshot()
    x = rng.normal(0.0, spread, (m, 5))
    for _ in range(2):  # the second call reuses the cached work arrays
        np.testing.assert_allclose(d.reward(x), [d.reward(row) for row in x], rtol=1e-12, atol=1e-12)


def test_forward_keeps_working_after_pickling_and_later_updates():
    """Unpickling copies numpy views apart: the forward rebuilds its work arrays and views, so a copy
    still follows its own snapshot when that is updated in place (as a D round's refresh does)."""
    d = Discriminator(2, (4,), rng=np.random.default_rng(0))
    x = np.array([[0.7, -0.2], [0.1, 0.3]])
    copied = pickle.loads(pickle.dumps(d.forward))
    np.testing.assert_array_equal(copied.reward(x), d.forward.reward(x))
    other = Discriminator(2, (4,), rng=np.random.default_rng(5))
    flat = np.empty(DiscriminatorForward.size(2, (4,)))
    other.forward.dump(flat)
    copied.load(flat)  # in place, into the copy's arrays
    np.testing.assert_array_equal(copied.reward(x), other.forward.reward(x))
    np.testing.assert_allclose([copied.reward(row) for row in x], other.forward.reward(x), rtol=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e4, 1e4))
def test_reward_is_finite_for_every_logit(logit):
    d = known_discriminator(final_bias=logit)
    with torch.no_grad():
        d.net[2].weight.zero_()
    d.refresh_snapshot()
    r = d.reward(np.zeros(2))
    assert math.isfinite(r) and r >= 0
    stored = float(np.float32(logit))  # D's parameters are float32
    assert math.isclose(r, float(softplus(-stored)), rel_tol=1e-12, abs_tol=1e-300)


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e4, 1e4))
def test_logit_form_is_log_one_minus_d_minus_log_d(logit):
    """``reward_form="logit"``: −logit = log(1 − D) − log D, i.e. −log D minus −log(1 − D); 0 at chance."""
    d = known_discriminator(final_bias=logit, reward_form="logit")
    with torch.no_grad():
        d.net[2].weight.zero_()
    d.refresh_snapshot()
    stored = float(np.float32(logit))
    r = d.reward(np.zeros(2))
    assert r == -stored and d.reward(np.zeros((3, 2))).tolist() == [-stored] * 3
    neg_log_d, neg_log_one_minus_d = float(softplus(-stored)), float(softplus(stored))
    assert math.isclose(r, neg_log_d - neg_log_one_minus_d, rel_tol=1e-9, abs_tol=1e-9)


def test_reward_forms_at_chance_and_by_hand():
    """At chance (logit 0) −log D pays log 2, the logit form nothing; elsewhere −logit by hand."""
    x = np.array([0.7, -0.2])
    logit = 2 * math.tanh(0.5 * 0.7 + 1.0 * 0.2 + 0.1) + 0.3
    assert abs(known_discriminator(reward_form="logit").reward(x) + logit) < 1e-6
    chance = [known_discriminator(final_bias=0.0, reward_form=f) for f in ("neg_log_d", "logit")]
    for d in chance:
        with torch.no_grad():
            d.net[2].weight.zero_()
        d.refresh_snapshot()
    assert chance[0].reward(x) == math.log(2) and chance[1].reward(x) == 0.0


def test_reward_form_survives_pickling_and_old_pickles_read_as_neg_log_d():
    d = known_discriminator(reward_form="logit")
    x = np.array([0.7, -0.2])
    assert pickle.loads(pickle.dumps(d.forward)).reward(x) == d.reward(x)
    old = d.forward.__getstate__()
    del old["reward_form"]  # a forward pickled before reward forms existed
    f = DiscriminatorForward.__new__(DiscriminatorForward)
    f.__setstate__(old)
    assert f.reward(x) == float(softplus(-d.logits(x)))
    with pytest.raises(ValueError, match="reward_form"):
        DiscriminatorForward(2, (1,), 5.0, reward_form="log_d")


def test_gradient_is_finite_for_extreme_logits():
    d = Discriminator(2, (1,), rng=np.random.default_rng(0))
    logits = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], requires_grad=True)
    loss = d.loss(torch.cat([logits, -logits]), torch.cat([torch.ones(5), torch.zeros(5)]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_load_state_dict_brings_weights_and_moments_back_and_keeps_its_own_learning_rate():
    """A resume (or a PBT exploit) with another d_lr trains at the new one, from the saved Adam moments."""
    rng = np.random.default_rng(0)
    saved = Discriminator(2, (4,), lr=1e-2, rng=np.random.default_rng(0))
    saved.train(rng.normal(-1, 1, (64, 2)), rng.normal(1, 1, (64, 2)), updates=3, batch_size=16, rng=rng)
    state = saved.state_dict()
    resumed = Discriminator(2, (4,), lr=1e-3, rng=np.random.default_rng(1))
    resumed.load_state_dict(state)
    assert resumed.optimizer.param_groups[0]["lr"] == 1e-3 and saved.optimizer.param_groups[0]["lr"] == 1e-2
    ours, theirs = resumed.optimizer.state_dict()["state"], state["optimizer"]["state"]
    assert ours.keys() == theirs.keys() and all(
        torch.equal(ours[i][k], theirs[i][k]) for i in ours for k in ("step", "exp_avg", "exp_avg_sq"))
    pairs = zip(resumed.net.parameters(), saved.net.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    x = np.array([[0.3, -0.4]])
    assert resumed.logits(x) == saved.logits(x)


def separated_state(seed=0):
    """A GASILState whose buffer holds (s, a) near +2 and whose policy samples sit near -2."""
    rng = np.random.default_rng(seed)
    state = GASILState(GASILConfig(gasil=True, d_every=256, seed=seed, gamma=1.0))
    import gymnasium as gym

    state.attach(gym.spaces.Box(-np.inf, np.inf, (3,)), gym.spaces.Box(-1, 1, (2,)))
    for _ in range(4):
        state.add_episode(rng.normal(2, 0.5, (50, 3)), rng.normal(0.5, 0.2, (50, 2)), np.ones(50))
    return state, rng


def test_discriminator_learns_to_separate_buffer_from_policy():
    state, rng = separated_state()
    # ten training rounds with the paper's defaults (20 updates of 128, lr 1e-4); the last one takes
    # effect apply_lag steps after it starts
    for _ in range(256 * 10 + state.config.apply_lag):
        state.shaped_reward(rng.normal(-2, 0.5, 3), rng.normal(-0.5, 0.2, 2), 0.0)
    assert state.rounds == 10
    diag = state.diagnostics()
    assert diag["d_acc_policy"] > 0.9 and diag["d_acc_buffer"] > 0.9
    policy = np.concatenate([rng.normal(-2, 0.5, (500, 3)), rng.normal(-0.5, 0.2, (500, 2))], axis=1)
    good = np.concatenate([rng.normal(2, 0.5, (500, 3)), rng.normal(0.5, 0.2, (500, 2))], axis=1)
    d = state.discriminator
    accuracy = ((d.logits(policy) > 0).mean() + (d.logits(good) < 0).mean()) / 2
    assert accuracy > 0.9
    assert state.discriminator_reward(good[:, :3], good[:, 3:]).mean() > \
        state.discriminator_reward(policy[:, :3], policy[:, 3:]).mean()


def test_same_seed_same_discriminator():
    a, rng_a = separated_state(seed=5)
    b, rng_b = separated_state(seed=5)
    for _ in range(600):
        sa, aa = rng_a.normal(size=3), rng_a.normal(size=2)
        sb, ab = rng_b.normal(size=3), rng_b.normal(size=2)
        assert a.shaped_reward(sa, aa, 1.0) == b.shaped_reward(sb, ab, 1.0)
    net_a, net_b = a.state_dict()["discriminator"]["net"], b.state_dict()["discriminator"]["net"]
    assert all(torch.equal(net_a[k], net_b[k]) for k in net_a)  # state_dict waits for a round in training


def test_loss_is_gails_two_class_means_minus_bernoulli_entropy():
    """The loss (2 x mean BCE, entropy as BCE against its own sigmoid) equals, in value and gradient,
    mean softplus(-l_policy) + mean softplus(l_good) - c * mean[(1 - sigmoid(l)) l - logsigmoid(l)]."""
    d = Discriminator(2, (1,), entropy_coef=0.3, rng=np.random.default_rng(0))
    raw = torch.tensor([2.0, -1.0, 0.5, 30.0, -3.0, 0.0, 1.5, -40.0], dtype=torch.float64)
    labels = torch.tensor([1.0] * 4 + [0.0] * 4, dtype=torch.float64)
    ours, ref = raw.clone().requires_grad_(), raw.clone().requires_grad_()
    d.loss(ours, labels).backward()
    p, g = ref[:4], ref[4:]
    entropy = ((1 - torch.sigmoid(ref)) * ref - torch.nn.functional.logsigmoid(ref)).mean()
    softplus = torch.nn.functional.softplus
    expected = softplus(-p).mean() + softplus(g).mean() - 0.3 * entropy
    expected.backward()
    assert abs(d.loss(raw, labels).item() - expected.item()) < 1e-12
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-12, atol=1e-12)
