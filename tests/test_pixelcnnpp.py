import math

import pytest
import torch
from scipy import stats

from raydgm.models.pixelcnnpp import (
    PixelCNNpp, discretized_logistic_log_probs, discretized_mix_logistic_log_prob,
    sample_discretized_mix_logistic)

LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # the 8-bit grid on [-1, 1]


def tiny(shape=(1, 8, 8), dropout=0.0, seed=0, nr_mix=2):
    torch.manual_seed(seed)
    return PixelCNNpp(shape, nr_resnet=1, nr_filters=8, nr_logistic_mix=nr_mix, dropout=dropout)


def make_constant(model, bias):
    """The network then outputs the same raw mixture parameters ``bias`` at every pixel."""
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def level_pmf(bias):
    """(256,) pmf of a C=1 pixel under raw parameters ``bias``, from the likelihood code."""
    params = torch.as_tensor(bias, dtype=torch.float64).view(1, -1, 1, 1).expand(256, -1, 1, 1)
    return discretized_mix_logistic_log_prob(LEVELS.view(256, 1, 1, 1), params).exp().flatten()


# ---------------------------------------------------------------------------- architecture
def test_paper_cifar_config_builds_with_53m_parameters():
    model = PixelCNNpp((3, 32, 32))  # 5 / 160 / 10, the paper's CIFAR-10 model
    # 53,618,660 without weight norm; the paper's (weight-normed) model is ~53M
    assert sum(p.numel() for p in model.parameters()) == 53_618_660
    assert len(model.down_u[0]) == 5 and len(model.down_u[1]) == len(model.down_u[2]) == 6
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 10 * 10, 32, 32) and torch.isfinite(out).all()


def test_channel_counts_and_shape_checks():
    assert tiny((1, 8, 8))(torch.zeros(2, 1, 8, 8)).shape == (2, 3 * 2, 8, 8)
    assert tiny((3, 12, 8))(torch.zeros(2, 3, 12, 8)).shape == (2, 10 * 2, 12, 8)
    with pytest.raises(ValueError):
        PixelCNNpp((3, 10, 8), nr_resnet=1, nr_filters=8)
    with pytest.raises(ValueError):
        PixelCNNpp((2, 8, 8), nr_resnet=1, nr_filters=8)


@pytest.mark.parametrize("C", [1, 3])
def test_output_at_a_pixel_depends_only_on_earlier_pixels(C):
    model = tiny((C, 8, 8)).eval()
    x0 = torch.rand(1, C, 8, 8) * 2 - 1
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    for i, j in [(0, 0), (0, 5), (3, 0), (4, 4), (7, 0), (7, 7)]:
        x = x0.clone().requires_grad_(True)
        model(x)[0, :, i, j].sum().backward()
        later = (rows * 8 + cols >= i * 8 + j)  # x_ij itself (all channels) and after it
        assert (x.grad[0][:, later] == 0.0).all(), (i, j)
        # the earlier pixels it sees: every row above i-1 (through the low resolutions), and
        # in rows i-1 and i the columns within 3 (full-resolution reach is ~1 column per conv)
        seen = ~later & ((rows <= i - 2) | ((cols - j).abs() <= 3))
        assert (x.grad[0].abs().sum(0)[seen] != 0).all(), (i, j)
        assert seen.any() == (i * 8 + j > 0)


def test_top_rows_output_ignores_rows_below():
    """What lets decode run the network on the rows up to the current one only."""
    model = tiny((3, 8, 8)).eval()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, :, :4])[:, :, :4], model(x)[:, :, :4])


# ------------------------------------------------------------------------------ likelihood
def test_c1_pmf_sums_to_one_over_the_256_levels():
    g = torch.Generator().manual_seed(0)
    P, K = 40, 3  # 40 random parameter sets as 40 "pixels"
    logits = torch.randn(1, K, 1, P, generator=g, dtype=torch.float64)
    means = torch.rand(1, K, 1, P, generator=g, dtype=torch.float64) * 2.4 - 1.2  # incl. beyond edges
    log_s = torch.rand(1, K, 1, P, generator=g, dtype=torch.float64) * 9 - 7  # -7 .. 2
    params = torch.cat([logits, means, log_s], 1).expand(256, -1, -1, -1)
    x = LEVELS.view(256, 1, 1, 1).expand(-1, -1, -1, P)
    total = discretized_mix_logistic_log_prob(x, params).exp().sum(0)
    torch.testing.assert_close(total, torch.ones(1, P, dtype=torch.float64), atol=1e-5, rtol=0)


def test_c1_pmf_known_values():
    # one logistic centred on level 128 with s = 0.1: P(level 128) = sigmoid(h/s) - sigmoid(-h/s), h=1/255
    s = 0.1
    bias = [0.0, 128 / 127.5 - 1, math.log(s)]
    pmf = level_pmf(bias)
    h = 1 / 255
    expect = 1 / (1 + math.exp(-h / s)) - 1 / (1 + math.exp(h / s))
    assert pmf[128].item() == pytest.approx(expect, rel=1e-9)
    # level 0 takes the whole lower tail: sigmoid((-1 + h - mu) / s)
    mu = 128 / 127.5 - 1
    assert pmf[0].item() == pytest.approx(1 / (1 + math.exp(-(-1 + h - mu) / s)), rel=1e-9)
    assert pmf[255].item() == pytest.approx(1 / (1 + math.exp((1 - h - mu) / s)), rel=1e-9)


def test_c3_each_conditional_sums_to_one_given_previous_channels():
    g = torch.Generator().manual_seed(1)
    K, P = 2, 16
    params = (torch.randn(1, 10 * K, 1, P, generator=g, dtype=torch.float64)).expand(256, -1, -1, -1)
    prev = LEVELS[torch.randint(0, 256, (P, 3), generator=g)]  # random earlier channels
    for c in range(3):
        x = prev.T.reshape(1, 3, 1, P).repeat(256, 1, 1, 1)
        x[:, c] = LEVELS.view(256, 1, 1)  # enumerate channel c; channels > c do not matter
        lp = discretized_logistic_log_probs(x, params)  # (256, 3, K, 1, P)
        total = lp[:, c].exp().sum(0)
        torch.testing.assert_close(total, torch.ones(K, 1, P, dtype=torch.float64), atol=1e-5, rtol=0)


def test_c3_mixture_marginalises_blue_to_the_red_green_mixture():
    """sum_b p(r, g, b) = sum_k pi_k p_k(r) p_k(g | r): with the per-channel sums above, the
    joint over 256^3 colours is normalised."""
    g = torch.Generator().manual_seed(2)
    K, P = 3, 20
    raw = torch.randn(1, 10 * K, 1, 1, generator=g, dtype=torch.float64)
    rg = LEVELS[torch.randint(0, 256, (P, 2), generator=g)]  # 20 random (r, g) pairs
    x = torch.cat([rg.repeat_interleave(256, 0), LEVELS.repeat(P)[:, None]], 1).view(-1, 3, 1, 1)
    joint = discretized_mix_logistic_log_prob(x, raw.expand(len(x), -1, -1, -1)).exp()
    lhs = joint.view(P, 256).sum(1)
    x_rg = torch.cat([rg, torch.zeros(P, 1, dtype=torch.float64)], 1).view(P, 3, 1, 1)
    lp = discretized_logistic_log_probs(x_rg, raw.expand(P, -1, -1, -1))[:, :2].sum(1)  # (P, K, 1, 1)
    pi = torch.softmax(raw[0, :K, 0, 0], 0)
    rhs = (pi * lp[:, :, 0, 0].exp()).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-9)


def test_bits_per_dim_of_untrained_model_and_learning():
    model = tiny((1, 8, 8), dropout=0.5)
    x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    bpd = model.eval().bits_per_dim(x)
    assert bpd.shape == (8,) and torch.isfinite(bpd).all() and (6 < bpd).all() and (bpd < 12).all()
    # nats and bits/dim agree: loss / (C*H*W*ln 2)
    torch.testing.assert_close(bpd, model.loss(x) / (64 * math.log(2)))
    model.train()

    g = torch.Generator().manual_seed(3)
    batch = (100 + torch.randint(-3, 4, (4, 1, 8, 8), generator=g)).to(torch.uint8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], (losses[0], losses[-1])


# --------------------------------------------------------------------------------- sampler
def test_sample_shape_dtype_and_determinism():
    model = tiny((3, 8, 8), dropout=0.5).train()
    a = model.sample(2, torch.Generator().manual_seed(7))
    assert a.dtype == torch.uint8 and a.shape == (2, 3, 8, 8)
    assert model.training  # the training flag is restored
    assert torch.equal(a, model.sample(2, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, model.sample(2, torch.Generator().manual_seed(8)))


def test_a_sample_does_not_depend_on_its_batch():
    model = tiny((3, 8, 8))
    noises = [model.draw_noise(1, torch.Generator().manual_seed(s)) for s in (0, 1, 2)]
    alone = torch.cat([model.decode(nz) for nz in noises])
    batched = model.decode({k: torch.cat([nz[k] for nz in noises]) for k in noises[0]})
    assert torch.equal(alone, batched)
    assert noises[0]["mix"].shape == (1, 2, 8, 8) and noises[0]["logistic"].shape == (1, 3, 8, 8)
    assert noises[0]["mix"].min() >= 1e-5 and noises[0]["mix"].max() <= 1 - 1e-5


def test_pixel_sampler_picks_components_with_softmax_probabilities():
    """Gumbel-max over well-separated narrow components: frequencies = softmax(logits).
    (The wrong-sign Gumbel, argmax(logits - G), gives 0.656/0.281/0.063 here instead.)"""
    N, logits = 200_000, torch.tensor([0.8, 0.0, -1.0])
    params = torch.cat([logits, torch.tensor([-0.6, 0.1, 0.8]), torch.full((3,), -6.0)])
    g = torch.Generator().manual_seed(4)
    u_mix = torch.rand(N, 3, generator=g).clamp(1e-5, 1 - 1e-5)
    u_log = torch.rand(N, 1, generator=g).clamp(1e-5, 1 - 1e-5)
    x = sample_discretized_mix_logistic(params.expand(N, -1), u_mix, u_log)[:, 0]
    freq = torch.stack([(x < -0.3).double().mean(), ((x > -0.3) & (x < 0.45)).double().mean(),
                        (x > 0.45).double().mean()])
    torch.testing.assert_close(freq, torch.softmax(logits.double(), 0), atol=0.005, rtol=0)  # 4.5 s.e.


def test_sampled_levels_follow_the_likelihood_pmf():
    """Constant network output -> every pixel is an iid draw from the model's own pmf."""
    model = tiny((1, 8, 8), nr_mix=3)
    bias = [0.8, 0.0, -1.0, -0.6, 0.1, 0.97, -3.0, -2.5, -3.0]  # logits | means | log-scales
    make_constant(model, bias)
    levels = model.sample(64, torch.Generator().manual_seed(0)).flatten().long()  # 4096 draws
    counts = torch.bincount(levels, minlength=256).double()
    pmf = level_pmf(bias)
    assert pmf.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert counts[255] > 0.02 * len(levels)  # the upper tail really lands on level 255

    def chi2_pvalue(pmf):
        expected = pmf * len(levels)
        big = expected >= 5  # pool the rare levels into one bin
        obs = torch.cat([counts[big], counts[~big].sum().view(1)])
        exp = torch.cat([expected[big], expected[~big].sum().view(1)])
        return stats.chi2.sf(((obs - exp) ** 2 / exp).sum().item(), len(obs) - 1)

    assert chi2_pvalue(pmf) > 1e-3
    tv = 0.5 * (counts / len(levels) - pmf).abs().sum().item()
    assert tv < 0.1  # exact draws from this pmf: TV 0.07 on average, 0.08 at most in 50 trials
    # the test has power: the main component's mean shifted by 4 levels (0.6 of its scale) is rejected
    shifted = level_pmf([0.8, 0.0, -1.0, -0.6 + 4 / 127.5, 0.1, 0.97, -3.0, -2.5, -3.0])
    assert chi2_pvalue(shifted) < 1e-9


def test_coupled_colour_channels_follow_the_conditionals():
    """C=3, one component: randomized PIT of G | R and B | R, G must be Uniform(0, 1)."""
    model = tiny((3, 8, 8))
    K = 2  # component 2 is switched off by its logit
    raw = torch.zeros(10 * K)
    raw[:K] = torch.tensor([0.0, -1e4])
    rest = raw[K:].view(3, 3, K)  # (channel, mean/log-scale/coeff, K)
    rest[:, 0, 0] = torch.tensor([-0.2, -0.3, 0.1])
    rest[:, 1, 0] = torch.tensor([-1.5, -3.5, -3.0])
    rest[:, 2, 0] = torch.atanh(torch.tensor([0.8, -0.5, 0.6]))  # G<-R, B<-R, B<-G
    make_constant(model, raw)
    x = model.sample(16, torch.Generator().manual_seed(1)).double() / 127.5 - 1  # (16, 3, 8, 8)
    x = x.permute(0, 2, 3, 1).reshape(-1, 3)  # 1024 sampled colours
    N = len(x)
    params = raw.double().view(1, -1, 1, 1).expand(N * 256, -1, -1, -1)
    v = torch.rand(N, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def pit_pvalue(c, coupled=True):
        cand = x.repeat_interleave(256, 0)
        cand[:, c] = LEVELS.repeat(N)
        if not coupled:
            cand[:, :c] = 0.0  # a wrong model: ignore the earlier channels
        p = discretized_logistic_log_probs(cand.view(-1, 3, 1, 1), params)[:, c, 0].exp().view(N, 256)
        k = torch.round((x[:, c] + 1) * 127.5).long()
        cdf_below = torch.cumsum(p, 1).gather(1, k[:, None])[:, 0] - p.gather(1, k[:, None])[:, 0]
        u = cdf_below + v * p.gather(1, k[:, None])[:, 0]
        return stats.kstest(u.numpy(), "uniform").pvalue

    for c in range(3):
        assert pit_pvalue(c) > 1e-3, c
    assert pit_pvalue(1, coupled=False) < 1e-6 and pit_pvalue(2, coupled=False) < 1e-6


def test_nan_in_the_network_gives_nan_levels_and_sample_raises():
    model = tiny((1, 8, 8))
    with torch.no_grad():
        model.out.weight[1, 0] = float("nan")
    levels = model.decode(model.draw_noise(2, torch.Generator().manual_seed(0)))
    assert levels.shape == (2, 1, 8, 8) and torch.isnan(levels).all()
    with pytest.raises(ValueError):
        model.sample(2, torch.Generator().manual_seed(0))
