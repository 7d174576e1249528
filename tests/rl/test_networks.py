"""common/rl/networks.py: the paper's policy, RND target and predictor (Burda et al. 2018, appendix A.4), as the
released code builds them (policies/cnn_policy_param_matched.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from common.config import MIN_FRAME_SIZE
from common.rl.networks import POLICY_CONVS, RND_CONVS, PolicyNet, RNDModel, RNDPredictor, RNDTarget, conv_out_hw

# (out channels, kernel, stride), written out from the release: the policy's c3 has rf=4, the RND nets' c3r rf=3
POLICY_CONV_LAYERS = [(32, 8, 4), (64, 4, 2), (64, 4, 1)]
RND_CONV_LAYERS = [(32, 8, 4), (64, 4, 2), (64, 3, 1)]
POLICY_CONV_OUT = 64 * 6 * 6  # 84 -> 20 -> 9 -> 6
RND_CONV_OUT = 64 * 7 * 7  # 84 -> 20 -> 9 -> 7


def _convs(net: nn.Module) -> list[nn.Conv2d]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


# Built once per module (orthogonal init of the big layers is a QR decomposition): tests that train deep-copy.
@pytest.fixture(scope="module")
def policy() -> PolicyNet:
    torch.manual_seed(0)
    return PolicyNet(18)


@pytest.fixture(scope="module")
def rnd_model() -> RNDModel:
    torch.manual_seed(1)
    return RNDModel()


@pytest.fixture(scope="module")
def target(rnd_model) -> RNDTarget:
    return rnd_model.target


@pytest.fixture(scope="module")
def predictor(rnd_model) -> RNDPredictor:
    return rnd_model.predictor


@pytest.fixture
def net(request):
    """Indirect parametrisation by fixture name."""
    return request.getfixturevalue(request.param)


def test_policy_output_shapes(policy):
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    out = policy(obs)
    assert out.logits.shape == (3, 18)
    assert out.value_ext.shape == (3,)
    assert out.value_int.shape == (3,)
    assert all(torch.isfinite(x).all() for x in out)


def test_actor_logits_are_the_forward_logits(policy):
    """The actor's value-free path gives exactly the logits of the full forward pass, with a policy far from
    uniform (the heads' small init would hide a missing residual branch)."""
    policy = copy.deepcopy(policy)
    torch.nn.init.normal_(policy.pi_head.weight, std=0.5)
    torch.nn.init.normal_(policy.pi_extra.weight, std=0.5)
    obs = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    x = policy.trunk(obs.float() * (1.0 / 255.0))  # the paper's policy branch, written out: logits = W(x + relu(W'x))
    want = policy.pi_head(x + torch.relu(policy.pi_extra(x)))
    torch.testing.assert_close(policy.logits(obs), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(policy.logits(obs), policy(obs).logits)
    assert want.std() > 0.1


def test_policy_batch_of_one(policy):
    out = policy(torch.zeros(1, 4, 84, 84, dtype=torch.uint8))
    assert out.logits.shape == (1, 18) and out.value_ext.shape == (1,) and out.value_int.shape == (1,)


def test_policy_rows_are_independent(policy):
    """Each sample's output depends on its own observation only (no mixing across the batch)."""
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    full = policy(obs)
    for i in range(4):
        one = policy(obs[i : i + 1])
        for a, b in zip(full, one, strict=True):
            torch.testing.assert_close(a[i : i + 1], b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "net,in_ch,layers",
    [("policy", 4, POLICY_CONV_LAYERS), ("target", 1, RND_CONV_LAYERS), ("predictor", 1, RND_CONV_LAYERS)],
    indirect=["net"],
)
def test_conv_stack(net, in_ch, layers):
    convs = _convs(net)
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(o, (k, k), (s, s)) for o, k, s in layers]
    assert convs[0].in_channels == in_ch
    assert all(c.padding == (0, 0) for c in convs)


def test_policy_layers(policy):
    net = policy
    sizes = [(m.in_features, m.out_features) for m in net.trunk.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(POLICY_CONV_OUT, 256), (256, 448)]
    assert not any(isinstance(m, nn.LeakyReLU) for m in net.modules())
    assert net.pi_head.out_features == 18 and net.v_ext.out_features == 1 and net.v_int.out_features == 1


def test_rnd_layers(target, predictor):
    assert [(lin.in_features, lin.out_features) for lin in _linears(target)] == [(RND_CONV_OUT, 512)]
    assert [(lin.in_features, lin.out_features) for lin in _linears(predictor)] == [
        (RND_CONV_OUT, 512),
        (512, 512),
        (512, 512),
    ]
    for net in (target, predictor):  # the RND convs use LeakyReLU with TF's default slope, 0.2
        leaky = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
        assert len(leaky) == 3 and all(m.negative_slope == 0.2 for m in leaky)
    x = torch.randn(2, 1, 84, 84)
    assert target(x).shape == (2, 512) and predictor(x).shape == (2, 512)


def test_target_has_no_trainable_parameters(rnd_model):
    model = rnd_model
    assert len(list(model.target.parameters())) > 0
    assert not any(p.requires_grad for p in model.target.parameters())
    assert all(p.requires_grad for p in model.predictor.parameters())


@pytest.mark.parametrize(
    "opt_fn",
    [lambda p: torch.optim.Adam(p, lr=1e-3), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1)],
    ids=["adam", "sgd_wd"],
)
def test_target_unchanged_by_an_optimiser_step(opt_fn, rnd_model):
    """An optimiser built over all of RNDModel's parameters moves the predictor and never the target."""
    torch.manual_seed(1)
    model = copy.deepcopy(rnd_model)
    opt = opt_fn(model.parameters())
    target_before = {k: v.clone() for k, v in model.target.state_dict().items()}
    pred_before = {k: v.clone() for k, v in model.predictor.state_dict().items()}
    x = torch.randn(4, 1, 84, 84)
    loss = model(x)
    assert loss.shape == (4,) and (loss >= 0).all()
    loss.mean().backward()
    assert all(p.grad is None for p in model.target.parameters())
    opt.step()
    for k, v in model.target.state_dict().items():
        assert torch.equal(v, target_before[k]), k
    assert any(not torch.equal(v, pred_before[k]) for k, v in model.predictor.state_dict().items())
    assert model(x).mean() < loss.mean()


def _gram_gain(w: torch.Tensor) -> float:
    """W of a layer as a matrix [out, fan_in]; checks the rows (or columns) are orthogonal with one norm."""
    m = w.detach().reshape(w.shape[0], -1).double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    g2 = gram.diagonal().mean().item()
    torch.testing.assert_close(
        gram, g2 * torch.eye(gram.shape[0], dtype=torch.float64), rtol=0, atol=1e-5 * max(g2, 1e-12)
    )  # float32 weights
    return math.sqrt(g2)


def test_orthogonal_init_policy(policy):
    net = policy
    for c in _convs(net):
        assert _gram_gain(c.weight) == pytest.approx(math.sqrt(2), rel=1e-5)
    for lin in (m for m in net.trunk.modules() if isinstance(m, nn.Linear)):
        assert _gram_gain(lin.weight) == pytest.approx(math.sqrt(2), rel=1e-5)
    assert _gram_gain(net.pi_extra.weight) == pytest.approx(0.1, rel=1e-5)
    assert _gram_gain(net.v_extra.weight) == pytest.approx(0.1, rel=1e-5)
    assert _gram_gain(net.pi_head.weight) == pytest.approx(0.01, rel=1e-5)
    assert _gram_gain(net.v_ext.weight) == pytest.approx(0.01, rel=1e-5)
    assert _gram_gain(net.v_int.weight) == pytest.approx(0.01, rel=1e-5)


def test_orthogonal_init_linear_with_out_le_in(policy):
    """Explicitly: W W^T = gain^2 I for the trunk's first Linear [256, 2304]."""
    w = policy.trunk[1].weight.detach().double()
    assert w.shape == (256, POLICY_CONV_OUT)
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(256, dtype=torch.float64), rtol=0, atol=2e-5)


@pytest.mark.parametrize("net", ["target", "predictor"], indirect=True)
def test_orthogonal_init_rnd(net):
    for m in _convs(net) + _linears(net):
        assert _gram_gain(m.weight) == pytest.approx(math.sqrt(2), rel=1e-5)


@pytest.mark.parametrize("net", ["policy", "target", "predictor"], indirect=True)
def test_biases_zero(net):
    layers = _convs(net) + _linears(net)
    assert layers and all(m.bias is not None and torch.count_nonzero(m.bias) == 0 for m in layers)


def test_target_and_predictor_start_different(rnd_model):
    """Separately initialised: the initial RND error is not zero."""
    torch.manual_seed(2)
    assert (rnd_model(torch.randn(3, 1, 84, 84)) > 0).all()


def test_leaky_relu_slope_is_tensorflows_default():
    """The release calls tf.nn.leaky_relu without alpha: f(x) = x for x >= 0, 0.2 x below."""
    x = torch.linspace(-3, 3, 13)
    act = [m for m in RNDTarget().modules() if isinstance(m, nn.LeakyReLU)][0]
    torch.testing.assert_close(act(x), torch.where(x >= 0, x, 0.2 * x), rtol=0, atol=0)


@pytest.mark.parametrize("net", ["target", "predictor"], indirect=True)
def test_rnd_forward_is_convs_with_slope_point_two_written_out(net):
    """The RND nets' forward pass against the layers applied by hand with F.conv2d and x if x > 0 else 0.2 x."""
    x = torch.randn(2, 1, 84, 84)
    h = x
    for c in _convs(net):
        h = torch.nn.functional.conv2d(h, c.weight, c.bias, stride=c.stride)
        h = torch.where(h > 0, h, 0.2 * h)
    h = h.flatten(1)
    lins = _linears(net)
    for i, lin in enumerate(lins):
        h = h @ lin.weight.T + lin.bias
        if i < len(lins) - 1:
            h = torch.relu(h)
    torch.testing.assert_close(net(x), h, rtol=1e-4, atol=1e-5)


def test_policy_forward_written_out(policy):
    """Policy: three ReLU convs (third 4x4 stride 1), fc 256, fc 448, then per head a residual fc 448 branch:
    logits from x + relu(W_pi x), both values from x + relu(W_v x) (the release's fc2act / fc2val)."""
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    h = obs.float() / 255.0
    for c in _convs(policy):
        h = torch.relu(torch.nn.functional.conv2d(h, c.weight, c.bias, stride=c.stride))
    assert h.shape[1:] == (64, 6, 6)
    fc1, fc2 = [m for m in policy.trunk.modules() if isinstance(m, nn.Linear)]
    x = torch.relu(fc2(torch.relu(fc1(h.flatten(1)))))
    xv = x + torch.relu(policy.v_extra(x))
    out = policy(obs)
    torch.testing.assert_close(out.logits, policy.pi_head(x + torch.relu(policy.pi_extra(x))), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.value_ext, policy.v_ext(xv).squeeze(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.value_int, policy.v_int(xv).squeeze(-1), rtol=1e-5, atol=1e-6)


def test_min_frame_size_matches_the_convs():
    """config's MIN_FRAME_SIZE is the smallest side both conv stacks map to at least one pixel."""
    assert min(conv_out_hw(MIN_FRAME_SIZE, MIN_FRAME_SIZE, POLICY_CONVS)) >= 1
    assert min(conv_out_hw(MIN_FRAME_SIZE - 1, MIN_FRAME_SIZE - 1, POLICY_CONVS)) < 1
    assert min(conv_out_hw(MIN_FRAME_SIZE, MIN_FRAME_SIZE, RND_CONVS)) >= 1
    side = MIN_FRAME_SIZE
    assert PolicyNet(18, 4, side, side)(torch.zeros(1, 4, side, side, dtype=torch.uint8)).logits.shape == (1, 18)
    assert RNDModel(side, side)(torch.zeros(1, 1, side, side)).shape == (1,)
    with pytest.raises(ValueError, match="too small"):
        PolicyNet(18, 4, MIN_FRAME_SIZE - 1, MIN_FRAME_SIZE)
