"""Import of pclucas14/pixel-cnn-pp's pretrained PixelCNN++: a weight-normed reference network
laid out as that repository's ``PixelCNN`` (same module names, torch's own ``weight_norm``,
``nin`` as a Linear over channels) gives the state dict; the imported ``PixelCNNpp`` must
compute the same outputs, and our ``loss`` the same nats as that repository's loss."""
import argparse
import json
import math
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raydgm.cli import main
from raydgm.config import ConfigError, TrainGeneratorConfig
from raydgm.data import load_dataset
from raydgm.models.pixelcnnpp import PixelCNNpp, fold_weight_norm, from_pclucas14, load_pclucas14
from raydgm.models.pixelcnnpp.checkpoint import pclucas14_hyperparameters, their_name
from raydgm.pipeline.stages import train_generator
from raydgm.pipeline.store import ArtifactStore
from raydgm.training.generators import load_generator

TINY = {"nr_resnet": 2, "nr_filters": 8, "nr_logistic_mix": 3}


def wn(module: nn.Module) -> nn.Module:
    """torch's weight_norm, dim=0 (what pclucas14 calls): weight_g, weight_v in the state dict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.nn.utils.weight_norm(module)


# ------------------------------------------------------------- the reference, pclucas14's layout
class Shifted(nn.Module):
    """Zero-padded causal conv; ``right``: the down-right variant; ``then``: shift the output."""

    def __init__(self, c_in, c_out, size, stride=1, right=False, then=None):
        super().__init__()
        self.conv = wn(nn.Conv2d(c_in, c_out, size, stride))
        kh, kw = size
        self.pad = (kw - 1, 0, kh - 1, 0) if right else (kw // 2, kw // 2, kh - 1, 0)
        self.then = then

    def forward(self, x):
        y = self.conv(F.pad(x, self.pad))
        if self.then == "down":    # drop the last row, zeros on top
            y = torch.cat([torch.zeros_like(y[:, :, :1]), y[:, :, :-1]], dim=2)
        elif self.then == "right":  # drop the last column, zeros on the left
            y = torch.cat([torch.zeros_like(y[..., :1]), y[..., :-1]], dim=3)
        return y


class Deconv(nn.Module):
    def __init__(self, c, size):
        super().__init__()
        self.deconv = wn(nn.ConvTranspose2d(c, c, size, 2, output_padding=1))
        self.size = size

    def forward(self, x):
        y = self.deconv(x)
        kh, kw = self.size
        left = (kw - 1) // 2 if kw == 3 else 0
        return y[:, :, :y.shape[2] - kh + 1, left:y.shape[3] - (kw - 1 - left)]


class Nin(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.lin_a = wn(nn.Linear(c_in, c_out))

    def forward(self, x):  # a Linear over the channels of every pixel
        return self.lin_a(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def celu(x):
    return F.elu(torch.cat([x, -x], dim=1))


class Block(nn.Module):
    def __init__(self, nf, right, skip):
        super().__init__()
        size = (2, 2) if right else (2, 3)
        self.conv_input = Shifted(2 * nf, nf, size, right=right)
        if skip:
            self.nin_skip = Nin(2 * skip * nf, nf)
        self.dropout = nn.Dropout2d(0.5)
        self.conv_out = Shifted(2 * nf, 2 * nf, size, right=right)

    def forward(self, x, a=None):
        h = self.conv_input(celu(x))
        if a is not None:
            h = h + self.nin_skip(celu(a))
        a_, b_ = self.conv_out(self.dropout(celu(h))).chunk(2, dim=1)
        return x + a_ * torch.sigmoid(b_)


class Streams(nn.Module):
    def __init__(self, n, nf, skip_u, skip_ul):
        super().__init__()
        self.u_stream = nn.ModuleList(Block(nf, False, skip_u) for _ in range(n))
        self.ul_stream = nn.ModuleList(Block(nf, True, skip_ul) for _ in range(n))


class Reference(nn.Module):
    """pclucas14's ``PixelCNN``: its attribute names, its forward, torch's weight norm."""

    def __init__(self, channels, nr_resnet, nr_filters, nr_logistic_mix):
        super().__init__()
        n, nf = nr_resnet, nr_filters
        self.up_layers = nn.ModuleList(Streams(n, nf, 0, 1) for _ in range(3))
        self.down_layers = nn.ModuleList(Streams(m, nf, 1, 2) for m in (n, n + 1, n + 1))
        self.downsize_u_stream = nn.ModuleList(Shifted(nf, nf, (2, 3), 2) for _ in range(2))
        self.downsize_ul_stream = nn.ModuleList(Shifted(nf, nf, (2, 2), 2, right=True) for _ in range(2))
        self.upsize_u_stream = nn.ModuleList(Deconv(nf, (2, 3)) for _ in range(2))
        self.upsize_ul_stream = nn.ModuleList(Deconv(nf, (2, 2)) for _ in range(2))
        self.u_init = Shifted(channels + 1, nf, (2, 3), then="down")
        self.ul_init = nn.ModuleList([Shifted(channels + 1, nf, (1, 3), then="down"),
                                      Shifted(channels + 1, nf, (2, 1), right=True, then="right")])
        self.nin_out = Nin(nf, (10 if channels == 3 else 3) * nr_logistic_mix)

    def forward(self, x):
        x = torch.cat([x, x.new_ones(x.shape[0], 1, *x.shape[2:])], dim=1)
        u, ul = [self.u_init(x)], [self.ul_init[0](x) + self.ul_init[1](x)]
        for i, layer in enumerate(self.up_layers):
            for bu, bul in zip(layer.u_stream, layer.ul_stream):
                u.append(bu(u[-1]))
                ul.append(bul(ul[-1], u[-1]))
            if i < 2:
                u.append(self.downsize_u_stream[i](u[-1]))
                ul.append(self.downsize_ul_stream[i](ul[-1]))
        hu, hul = u.pop(), ul.pop()
        for i, layer in enumerate(self.down_layers):
            for bu, bul in zip(layer.u_stream, layer.ul_stream):
                hu = bu(hu, u.pop())
                hul = bul(hul, torch.cat([hu, ul.pop()], dim=1))
            if i < 2:
                hu, hul = self.upsize_u_stream[i](hu), self.upsize_ul_stream[i](hul)
        assert not u and not ul
        return self.nin_out(F.elu(hul))


def reference(channels, seed=0, **sizes):
    """A Reference in eval mode with known random g, v and biases (none at torch's init)."""
    sizes = {**TINY, **sizes}
    torch.manual_seed(seed)
    ref = Reference(channels, **sizes).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("weight_g"):
                p.copy_(torch.empty_like(p).uniform_(0.3, 1.2) * torch.sign(torch.randn_like(p)))
            else:
                p.copy_(torch.randn_like(p) * (1.0 if name.endswith("weight_v") else 0.1))
    return ref


def pclucas14_nats(x, l):
    """That repository's discretized_mix_logistic_loss (and _1d), rewritten: x (B, C, H, W) in
    [-1, 1], l (B, K*(1+...), H, W) -> total nats. Unpacked channels-last, as it does."""
    B, C, H, W = x.shape
    x, l = x.permute(0, 2, 3, 1), l.permute(0, 2, 3, 1)
    per = 3 if C == 3 else 2
    K = l.shape[-1] // (1 + C * per)
    logits, rest = l[..., :K], l[..., K:].reshape(B, H, W, C, per * K)
    means, log_s = rest[..., :K], rest[..., K:2 * K].clamp(min=-7.0)
    x = x.unsqueeze(-1).expand(B, H, W, C, K)
    if C == 3:
        c = torch.tanh(rest[..., 2 * K:])
        means = torch.stack([means[..., 0, :], means[..., 1, :] + c[..., 0, :] * x[..., 0, :],
                             means[..., 2, :] + c[..., 1, :] * x[..., 0, :] + c[..., 2, :] * x[..., 1, :]], dim=3)
    centred, inv_s = x - means, torch.exp(-log_s)
    plus, minus = inv_s * (centred + 1 / 255), inv_s * (centred - 1 / 255)
    delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * centred
    inner = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)),
                        mid - log_s - 2 * F.softplus(mid) - math.log(127.5))
    logp = torch.where(x < -0.999, plus - F.softplus(plus), torch.where(x > 0.999, -F.softplus(minus), inner))
    logp = logp.sum(dim=3) + torch.log_softmax(logits, dim=-1)
    return -torch.logsumexp(logp, dim=-1).sum()


def images(channels, n=4, side=8, seed=1):
    """uint8 (n, C, side, side): real digits for C=1, smooth colour ramps plus noise for C=3."""
    if channels == 1:
        return torch.from_numpy(load_dataset("digits").images[:n])
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 255, side).view(1, 1, 1, side)
    noisy = ramp + torch.randint(-40, 41, (n, 3, side, side), generator=g)
    return noisy.clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------------- the figures
@pytest.mark.parametrize("channels", [1, 3])
def test_imported_network_computes_what_the_weight_normed_reference_does(channels):
    ref = reference(channels)
    ours = from_pclucas14(ref.state_dict(), (channels, 8, 8), **TINY)
    x = images(channels).float() / 127.5 - 1
    with torch.no_grad():
        want, got = ref(x), ours(x)
    diff = (got - want).abs().max().item()
    print(f"C={channels}: max |ours - reference| = {diff:.2e} (outputs up to {want.abs().max():.2f})")
    assert want.std() > 0.05 and diff < 1e-5
    # every layer of ours holds the weight torch's weight_norm computes from (g, v)
    theirs = dict(ref.named_modules())
    for name, module in ours.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            ref_layer = theirs[their_name(name)]
            torch.testing.assert_close(module.weight.detach(), ref_layer.weight.detach().reshape(module.weight.shape))
            torch.testing.assert_close(module.bias.detach(), ref_layer.bias.detach())


@pytest.mark.parametrize("channels", [1, 3])
def test_loss_gives_the_nats_of_pclucas14s_loss(channels):
    ref = reference(channels, seed=2)
    ours = from_pclucas14(ref.state_dict(), (channels, 8, 8), **TINY)
    x = images(channels)
    with torch.no_grad():
        want = pclucas14_nats(x.double() / 127.5 - 1, ref(x.float() / 127.5 - 1).double()).item()
        got = ours.loss(x).sum().item()
    dims = x.numel() * math.log(2)
    print(f"C={channels}: bits/dim ours {got / dims:.6f}, pclucas14's loss {want / dims:.6f}")
    assert got / dims == pytest.approx(want / dims, rel=1e-5)
    assert 1.0 < got / dims < 12.0


def test_transposed_conv_weight_norm_runs_over_the_input_channel():
    """weight_norm(dim=0) of a ConvTranspose2d (in, out, kh, kw) keeps one norm per INPUT channel."""
    for layer, x in ((nn.ConvTranspose2d(3, 5, (2, 3)), torch.randn(1, 3, 4, 4)),
                     (nn.Conv2d(3, 5, (2, 3)), torch.randn(1, 3, 4, 4)), (nn.Linear(4, 6), torch.randn(1, 4))):
        old = wn(layer)
        torch.nn.init.normal_(old.weight_g)
        old(x)   # the forward pre-hook recomputes weight from (g, v)
        old_w = old.weight.detach().clone()
        g, v = old.weight_g.detach(), old.weight_v.detach()
        assert g.shape[0] == v.shape[0] and math.prod(g.shape) == v.shape[0]
        torch.testing.assert_close(fold_weight_norm(g, v).float(), old_w)
    # the other dim (one norm per output channel) would give another weight: the test can fail
    v = torch.randn(3, 5, 2, 3)
    per_out = torch.ones(1, 5, 1, 1) * v / v.pow(2).sum(dim=(0, 2, 3), keepdim=True).sqrt()
    assert not torch.allclose(fold_weight_norm(torch.ones(3, 1, 1, 1), v).float(), per_out)
    new = torch.nn.utils.parametrizations.weight_norm(nn.ConvTranspose2d(3, 5, (2, 3)))
    sd = new.state_dict()
    torch.testing.assert_close(fold_weight_norm(sd["parametrizations.weight.original0"],
                                                sd["parametrizations.weight.original1"]).float(),
                               new.weight.detach())


def test_dataparallel_prefix_and_newer_torch_names_import_alike():
    ref = reference(3)
    sd = ref.state_dict()
    renamed = {"module." + k.replace("weight_g", "parametrizations.weight.original0")
               .replace("weight_v", "parametrizations.weight.original1"): v for k, v in sd.items()}
    x = images(3).float() / 127.5 - 1
    with torch.no_grad():
        a = from_pclucas14(sd, (3, 8, 8), **TINY)(x)
        b = from_pclucas14(renamed, (3, 8, 8), **TINY)(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert pclucas14_hyperparameters(renamed) == {"input_channels": 3, **TINY}


def test_paper_model_layout_maps_one_to_one():
    """The 5 / 160 / 10 CIFAR-10 model: every one of our layers has exactly one pclucas14 layer."""
    ours = {k.rsplit(".", 1)[0] for k in PixelCNNpp((3, 32, 32)).state_dict()}
    theirs = {their_name(o) for o in ours}
    # 3 init convs, 15 up blocks (2 + 3 layers), 17 down blocks (3 + 3), 4 + 4 resizes, nin_out
    assert len(theirs) == len(ours) == 3 + 3 * 5 * (2 + 3) + (5 + 6 + 6) * (3 + 3) + 4 + 4 + 1


# ------------------------------------------------------------------------------------ the errors
def test_a_file_that_does_not_fit_is_an_error_naming_the_tensor():
    sd = reference(3).state_dict()
    with pytest.raises(ValueError, match=r"conv_input\.conv \(weight\) has shape \(8, 16, 2, 3\).*"
                       r"looks like nr_resnet=2, nr_filters=8, nr_logistic_mix=3"):
        from_pclucas14(sd, (3, 8, 8), nr_resnet=2, nr_filters=16, nr_logistic_mix=3)
    with pytest.raises(ValueError, match=r"missing layers down_layers\.0\.u_stream\.2\.conv_input\.conv"):
        from_pclucas14(sd, (3, 8, 8), nr_resnet=3, nr_filters=8, nr_logistic_mix=3)
    with pytest.raises(ValueError, match=r"models 3-channel images.*\(1, 8, 8\)"):
        from_pclucas14(sd, (1, 8, 8), **TINY)
    extra = {**sd, "up_layers.0.u_stream.9.conv_out.conv.bias": torch.zeros(16)}
    with pytest.raises(ValueError, match=r"unexpected layers up_layers\.0\.u_stream\.9\.conv_out\.conv"):
        from_pclucas14(extra, (3, 8, 8), **TINY)
    no_v = {k: v for k, v in sd.items() if k != "nin_out.lin_a.weight_v"}
    with pytest.raises(ValueError, match=r"nin_out\.lin_a needs weight_g and weight_v.*\['weight_g'\]"):
        from_pclucas14(no_v, (3, 8, 8), **TINY)
    bad = {**sd, "u_init.conv.weight_v": sd["u_init.conv.weight_v"] * float("nan")}
    with pytest.raises(ValueError, match=r"'u_init\.conv\.weight_v' holds NaN"):
        from_pclucas14(bad, (3, 8, 8), **TINY)
    stray = {**sd, "init_padding": torch.ones(1)}
    with pytest.raises(ValueError, match=r"'init_padding' is not a weight or bias"):
        from_pclucas14(stray, (3, 8, 8), **TINY)


def test_a_pickle_of_code_is_refused_weights_only(tmp_path):
    ref = reference(3)   # the 2018 file predates torch's zip format: the legacy one loads too
    torch.save(ref.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    x = images(3).float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(load_pclucas14(tmp_path / "legacy.pth", (3, 8, 8), **TINY)(x), ref(x),
                                   rtol=0, atol=1e-5)
    path = tmp_path / "evil.pth"
    torch.save({"u_init.conv.bias": argparse.Namespace(a=1)}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_pclucas14(path, (3, 8, 8), **TINY)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pclucas14(tmp_path / "missing.pth", (3, 8, 8), **TINY)


# ------------------------------------------------------------------------ the stage and the CLI
def _cfg(path, **model):
    return TrainGeneratorConfig.from_dict({"model": {"kind": "pixelcnnpp", **TINY, **model},
                                           "checkpoint": str(path), "epochs": 3})


def test_cli_help_explains_import_generator(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["import-generator", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pclucas14/pixel-cnn-pp" in out and "weights_only=True" in out and "sha256" in out
    assert "generator.checkpoint=FILE" in out and "--format {pclucas14}" in out


def test_stage_imports_keyed_by_content_and_generation_uses_it(tmp_path, capsys, ray_local):
    from raydgm.config import DataConfig
    ref = reference(1, seed=3)
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, tmp_path / "pcnn.pth")
    home = tmp_path / "home"
    sets = ["--set", "data.name=digits", "--set", "generator.model.kind=pixelcnnpp"]
    sets += [a for k, v in TINY.items() for a in ("--set", f"generator.model.{k}={v}")]
    assert main(["import-generator", str(tmp_path / "pcnn.pth"), "--home", str(home), *sets]) == 0
    out = capsys.readouterr().out
    assert "imported" in out and "0 training epochs" in out and "generator.checkpoint=" in out
    (art_dir,) = [p for p in (home / "train_generator").iterdir() if not p.name.startswith(".")]
    manifest = json.loads((art_dir / "manifest.json").read_text())
    digest = json.loads((art_dir / "import.json").read_text())["sha256"]
    assert manifest["config"]["checkpoint"] == f"sha256:{digest}" and manifest["rows"]["epochs"] == 0
    # the same bytes under another name: the same artifact, reused, nothing trained
    shutil.copy(tmp_path / "pcnn.pth", tmp_path / "moved.pth")
    logs = []
    art = train_generator(DataConfig(name="digits"), _cfg(tmp_path / "moved.pth"), ArtifactStore(home), log=logs.append)
    assert art.reused and art.path == art_dir and "reused the import" in logs[0]
    x = images(1)
    with torch.no_grad():
        torch.testing.assert_close(load_generator(art.file("model.pt"))(x.float() / 127.5 - 1),
                                   ref(x.float() / 127.5 - 1), rtol=0, atol=1e-5)
    assert json.loads(art.file("history.json").read_text()) == []
    # generate reuses the import (nothing trained) and draws from the imported network
    assert main(["generate", "--home", str(home), *sets, "--set", f"generator.checkpoint={tmp_path / 'moved.pth'}",
                 "--set", "generate.num_samples=6", "--set", "generate.batch_size=3"]) == 0
    out = capsys.readouterr().out
    assert "reused the import of" in out and "wrote 6 samples (0 dropped as NaN/Inf) from pixelcnnpp" in out
    assert "epoch 1/" not in out


def test_stage_validates_before_it_computes(tmp_path):
    from raydgm.config import DataConfig
    with pytest.raises(ConfigError, match="model.kind is 'vae'"):
        TrainGeneratorConfig.from_dict({"model": {"kind": "vae"}, "checkpoint": "x.pth"})
    store = ArtifactStore(tmp_path / "home")
    with pytest.raises(FileNotFoundError, match="generator.checkpoint not found"):
        train_generator(DataConfig(name="digits"), _cfg(tmp_path / "none.pth"), store)
    torch.save(reference(3).state_dict(), tmp_path / "rgb.pth")   # a colour model, grey digits
    with pytest.raises(ValueError, match="3-channel images"):
        train_generator(DataConfig(name="digits"), _cfg(tmp_path / "rgb.pth"), store)
    assert not [p for p in (tmp_path / "home" / "train_generator").iterdir() if not p.name.startswith(".")]
    assert main(["import-generator", str(tmp_path / "rgb.pth"), "--set", "data.name=digits",
                 "--home", str(tmp_path / "home")]) == 2      # default model kind: baseline


def test_paper_preset_takes_the_checkpoint():
    from raydgm.config import SweepConfig
    from raydgm.sweeps.cli import load_sweep
    assert load_sweep(SweepConfig, "paper").generators["pixelcnnpp"].checkpoint is None
    cfg = load_sweep(SweepConfig, "paper", overrides=("generators.pixelcnnpp.checkpoint=/m/pcnn_889.pth",))
    gen = cfg.pipelines()["pixelcnnpp"].generator
    assert gen.checkpoint == "/m/pcnn_889.pth" and (gen.model.nr_resnet, gen.model.nr_filters) == (5, 160)


def test_configs_without_a_checkpoint_keep_their_hash():
    cfg = TrainGeneratorConfig()
    assert "checkpoint" not in cfg.to_dict() and "checkpoint_format" not in cfg.to_dict()
    with_file = TrainGeneratorConfig.from_dict({"model": {"kind": "pixelcnnpp"}, "checkpoint": "a.pth"})
    assert with_file.to_dict()["checkpoint"] == "a.pth" and with_file.content_hash() != cfg.content_hash()
    assert TrainGeneratorConfig.from_dict(with_file.to_dict()) == with_file
