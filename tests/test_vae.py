import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

from raydgm.data import load_dataset
from raydgm.models import GenerativeModel
from raydgm.models.vae import VAE, discretized_logistic_logpmf, gaussian_kl, rowwise_linear

TINY = dict(latent_dim=4, hidden_channels=(8, 16, 32))


def tiny_vae(seed: int = 0, **kwargs) -> VAE:
    torch.manual_seed(seed)
    return VAE((1, 8, 8), **{**TINY, **kwargs})


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """uint8 (256, 1, 8, 8): the first 256 training digits."""
    return torch.from_numpy(load_dataset("digits", None, seed=0).split("train")[0][:256])


def poison_first_layer(model: VAE) -> None:
    """Set column 0 of the decoder's first Linear weight to +inf.

    Then h = W z + b is +inf in every unit for a sample with z[0] > 0 (ReLU keeps it, the
    transposed convs mix +inf with weights of both signs -> NaN params), and -inf for a
    sample with z[0] < 0 (ReLU -> 0, everything downstream finite). So exactly the samples
    with z[:, 0] > 0 must come out NaN.
    """
    with torch.no_grad():
        model.decoder[0].weight[:, 0] = float("inf")


# --- shapes and validation -----------------------------------------------------------

@pytest.mark.parametrize("shape, kwargs", [
    ((1, 32, 32), {}), ((3, 32, 32), {}), ((1, 8, 8), TINY),
    ((3, 32, 32), dict(likelihood="bernoulli")), ((1, 8, 8), dict(TINY, likelihood="bernoulli")),
])
def test_shapes(shape, kwargs):
    torch.manual_seed(0)
    model = VAE(shape, **kwargs)
    assert isinstance(model, GenerativeModel) and model.image_shape == shape
    C, H, W = shape
    D = kwargs.get("latent_dim", 180)
    x = torch.randint(0, 256, (5, *shape), dtype=torch.uint8)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, D)
    out_c = C if kwargs.get("likelihood") == "bernoulli" else 2 * C
    assert model.decode_params(mu).shape == (5, out_c, H, W)
    recon, kl = model.elbo_terms(x)
    assert recon.shape == kl.shape == model.loss(x).shape == model.bits_per_dim(x).shape == (5,)
    noise = model.draw_noise(3, torch.Generator().manual_seed(0))
    assert noise["z"].shape == (3, D) and noise["u"].shape == (3, *shape)
    assert 1e-5 <= noise["u"].min() and noise["u"].max() <= 1 - 1e-5
    levels = model.decode(noise)
    assert levels.dtype == torch.float32 and levels.shape == (3, *shape)
    assert torch.equal(levels, levels.round()) and 0 <= levels.min() and levels.max() <= 255
    assert model.sample(3, torch.Generator().manual_seed(0)).dtype == torch.uint8


@pytest.mark.parametrize("shape, kwargs, match", [
    ((1, 30, 32), {}, "divisible by 2\\*\\*3=8"),
    ((1, 32, 12), {}, "divisible"),
    ((2, 32, 32), {}, "1 or 3 image channels"),
    ((1, 32, 32), dict(likelihood="gauss"), "unknown likelihood 'gauss'"),
])
def test_constructor_rejects(shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE(shape, **kwargs)


# --- analytic pieces -----------------------------------------------------------------

def test_gaussian_kl_closed_form():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    expected = torch.tensor([0.5 * (1 + 1 - 1 - 0) + 0.5 * (0 + 2 - 1 - math.log(2.0)), 0.0])
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)
    mu, logvar = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_kl(mu, logvar), kl_divergence(q, p).sum(1), rtol=1e-12, atol=1e-12)


def test_discretized_logistic_is_a_normalized_pmf():
    g = torch.Generator().manual_seed(0)
    mean = (torch.rand(50, 1, generator=g, dtype=torch.float64) * 3 - 1.5)      # beyond [-1, 1] too
    log_scale = torch.rand(50, 1, generator=g, dtype=torch.float64) * 8 - 7      # [-7, 1]
    levels = torch.arange(256, dtype=torch.float64).expand(50, 256)
    logp = discretized_logistic_logpmf(levels, mean, log_scale)                  # (50, 256)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(50, dtype=torch.float64), rtol=0, atol=1e-12)
    # second route: CDF differences in float64, interior bins where they do not cancel
    x, s = levels / 127.5 - 1, log_scale.exp()
    cdf = lambda t: torch.sigmoid((t - mean) / s)
    direct = cdf(x + 1 / 255) - cdf(x - 1 / 255)
    direct[:, 0], direct[:, 255] = cdf(x[:, 0:1] + 1 / 255)[:, 0], 1 - cdf(x[:, 255:] - 1 / 255)[:, 0]
    ok = direct > 1e-8                          # where the reference itself does not cancel
    assert ok.sum() > 2000 and ok[:, 0].sum() > 10 and ok[:, 255].sum() > 10
    torch.testing.assert_close(logp[ok], direct[ok].log(), rtol=1e-9, atol=1e-9)


def test_discretized_logistic_float32_is_stable_in_the_tails():
    # level 200 under a sharp logistic at level ~26: the CDF difference underflows to 0 in
    # float32 (log = -inf); the product form stays finite and agrees with float64.
    mean, log_scale, level = torch.tensor([-0.8]), torch.tensor([-5.0]), torch.tensor([200.0])
    logp32 = discretized_logistic_logpmf(level, mean, log_scale)
    logp64 = discretized_logistic_logpmf(level.double(), mean.double(), log_scale.double())
    assert torch.isfinite(logp32).all() and logp64.item() < -100
    torch.testing.assert_close(logp32.double(), logp64, rtol=1e-5, atol=0)


def test_discretized_logistic_gradients():
    g = torch.Generator().manual_seed(1)
    levels = torch.tensor([0.0, 1.0, 100.0, 254.0, 255.0], dtype=torch.float64)
    mean = (torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    log_scale = (torch.rand(5, generator=g, dtype=torch.float64) * 3 - 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda m, s: discretized_logistic_logpmf(levels, m, s), (mean, log_scale))


def test_bernoulli_reconstruction_is_bce_on_x_over_255():
    model = tiny_vae(likelihood="bernoulli")
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    z = torch.randn(3, 4)
    p, t = torch.sigmoid(model.decode_params(z)).double(), x.double() / 255
    expected = -(t * p.log() + (1 - t) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(model.nll_given_z(x, z).double(), expected, rtol=1e-5, atol=1e-4)


# --- training and the bound ----------------------------------------------------------

def mean_loss(model: VAE, x: torch.Tensor, draws: int = 8) -> float:
    torch.manual_seed(123)
    with torch.no_grad():
        return float(torch.stack([model.loss(x) for _ in range(draws)]).mean())


def test_training_reduces_the_loss(digits):
    model = tiny_vae(latent_dim=8)
    before = mean_loss(model, digits)
    bpd_before = before / (64 * math.log(2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for step in range(100):
        batch = digits[(step % 4) * 64 : (step % 4 + 1) * 64]
        opt.zero_grad()
        model.loss(batch).mean().backward()
        opt.step()
    after = mean_loss(model, digits)
    # measured over init seeds 0-2: 213-216 -> 178-180 nats/image; require a 20-nat drop
    assert after < before - 20.0, (before, after)
    torch.manual_seed(5)
    with torch.no_grad():
        bpd_after = float(model.bits_per_dim(digits).mean())
    # 4.8 -> 4.05 bits/dim measured; a one-draw ELBO must still beat init by 0.3
    assert bpd_after < bpd_before - 0.3, (bpd_before, bpd_after)


def test_importance_sampled_likelihood_bounds_the_elbo(digits):
    """log p(x) ~ log mean_k w_k (K=200) must sit above the ELBO, and the ELBO of ``loss``
    must equal the Monte Carlo mean of log w (same densities, analytic KL)."""
    model = tiny_vae(seed=3)
    with torch.no_grad():                     # put q(z|x) far from the prior: KL ~ 4 nats
        model.to_mu.bias.fill_(1.0)
        model.to_logvar.bias.fill_(-2.0)
    x, K = digits[:4], 200
    torch.manual_seed(0)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        z = q.sample((K,))                                                     # (K, B, D)
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_px_z = -model.nll_given_z(x.repeat(K, 1, 1, 1), z.flatten(0, 1)).view(K, -1)
        log_w = log_px_z + log_pz - q.log_prob(z).sum(-1)                      # (K, B)
        iwae = torch.logsumexp(log_w, 0) - math.log(K)
        elbo = -torch.stack([model.loss(x) for _ in range(K)]).mean(0)
    kl = gaussian_kl(mu, logvar)
    assert (kl > 3).all()
    stderr = log_w.std(0) / math.sqrt(K)
    assert ((log_w.mean(0) - elbo).abs() < 5 * stderr + 0.05).all(), (log_w.mean(0), elbo)
    assert (iwae >= elbo - 5 * stderr).all(), (iwae, elbo)
    assert (iwae - elbo > 1.0).all(), (iwae, elbo)    # a real gap, not a tie


def test_reparameterized_z_has_the_posterior_moments(digits, monkeypatch):
    model = tiny_vae(seed=3)
    with torch.no_grad():
        model.to_logvar.bias.fill_(-2.0)          # posterior std ~ exp(-1) = 0.37
    seen = []
    monkeypatch.setattr(model, "nll_given_z", lambda x, z: seen.append(z) or torch.zeros(len(x)))
    x = digits[:1].repeat(4000, 1, 1, 1)
    torch.manual_seed(0)
    with torch.no_grad():
        model.elbo_terms(x)
        mu, logvar = model.encode(digits[:1])
    z = seen[0]
    torch.testing.assert_close(z.mean(0), mu[0], rtol=0, atol=4 * 0.5 / math.sqrt(4000))
    torch.testing.assert_close(z.std(0), (0.5 * logvar[0]).exp(), rtol=0.05, atol=0)


# --- sampling ------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", ["logistic", "bernoulli"])
def test_sampling_is_seeded_and_batch_invariant(likelihood):
    torch.manual_seed(0)
    model = VAE((1, 32, 32), likelihood=likelihood)
    a = model.sample(7, torch.Generator().manual_seed(11))
    assert a.dtype == torch.uint8 and a.shape == (7, 1, 32, 32)
    assert torch.equal(a, model.sample(7, torch.Generator().manual_seed(11)))
    assert not torch.equal(a, model.sample(7, torch.Generator().manual_seed(12)))
    noise = model.draw_noise(7, torch.Generator().manual_seed(11))
    batched = model.decode(noise)
    single = [{k: v[i : i + 1] for k, v in noise.items()} for i in range(7)]
    one_by_one = torch.cat([model.decode(one) for one in single])
    assert torch.equal(batched, one_by_one)                      # levels, bitwise
    with torch.no_grad():
        params = model.decode_params(noise["z"], batch_invariant=True)
        singles = torch.cat([model.decode_params(z_i, batch_invariant=True) for z_i in noise["z"].split(1)])
        assert torch.equal(params, singles)                      # float params, bitwise
        torch.testing.assert_close(params, model.decode_params(noise["z"]), rtol=1e-5, atol=1e-5)


def test_rowwise_linear_matches_linear_and_ignores_the_batch():
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g) for s in [(9, 30), (50, 30), (50,)])
    out = rowwise_linear(x, w, b)
    torch.testing.assert_close(out, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    assert torch.equal(out, torch.cat([rowwise_linear(x[i : i + 1], w, b) for i in range(9)]))


def test_mean_decoding_without_pixel_noise():
    model = tiny_vae(likelihood="bernoulli", pixel_noise=False)
    noise = model.draw_noise(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        p = torch.sigmoid(model.decode_params(noise["z"]))
    torch.testing.assert_close(model.decode(noise), (p * 255).round(), rtol=0, atol=1.0)
    noise2 = dict(noise, u=torch.full_like(noise["u"], 0.5))
    assert torch.equal(model.decode(noise), model.decode(noise2))   # u is ignored


def constant_decoder(model: VAE, values: list[float]) -> None:
    """Make every pixel's decoder output channel i equal values[i], whatever z."""
    last = model.decoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(values))


def test_samples_follow_the_pmf_that_the_loss_scores():
    model = tiny_vae(likelihood="logistic")
    constant_decoder(model, [0.1, -3.0])                        # mean 0.1, scale e^-3 ~ 6 levels
    levels = model.decode(model.draw_noise(500, torch.Generator().manual_seed(0)))
    freq = torch.bincount(levels.flatten().long(), minlength=256).double() / levels.numel()
    pmf = discretized_logistic_logpmf(torch.arange(256.0), torch.tensor(0.1), torch.tensor(-3.0)).exp()
    assert 0.5 * (freq - pmf.double()).abs().sum() < 0.02        # total variation, 32,000 draws
    model = tiny_vae(likelihood="bernoulli")
    constant_decoder(model, [math.log(0.3 / 0.7)])              # p = 0.3
    levels = model.decode(model.draw_noise(500, torch.Generator().manual_seed(0)))
    assert set(levels.unique().tolist()) == {0.0, 255.0}
    assert abs(float((levels == 255).double().mean()) - 0.3) < 0.01


def test_log_scale_is_clamped_at_minus_7():
    model = tiny_vae(likelihood="logistic")
    constant_decoder(model, [0.0, -20.0])
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    expected = -discretized_logistic_logpmf(x, torch.tensor(0.0), torch.tensor(-7.0)).flatten(1).sum(1)
    torch.testing.assert_close(model.nll_given_z(x, torch.zeros(2, 4)), expected)


# --- NaN -----------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", ["logistic", "bernoulli"])
def test_nan_decoder_gives_nan_samples(likelihood):
    model = tiny_vae(likelihood=likelihood)
    poison_first_layer(model)
    noise = model.draw_noise(16, torch.Generator().manual_seed(2))
    predicted = noise["z"][:, 0] > 0
    assert 0 < predicted.sum() < 16
    levels = model.decode(noise)
    assert torch.equal(torch.isnan(levels).flatten(1).all(1), predicted)
    assert torch.isfinite(levels[~predicted]).all()
    n_bad = int(predicted.sum())
    with pytest.raises(ValueError, match=f"{n_bad} of 16 generated images"):
        model.sample(16, torch.Generator().manual_seed(2))
