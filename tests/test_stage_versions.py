"""One cache key, one output (DESIGN.md, "Data flow and artifacts").

A stage's key hashes its config (with its ``VERSION`` from 2 on) and its inputs' keys, and a
stage whose key exists is reused. So when code changes what a stage writes, its ``VERSION`` must
be bumped, or artifacts made by older code would be reused as if they were the new code's. This
file pins, for two tiny digits pipelines (``stage_digests``: the baseline generator, and a
contaminated one with its truth, every stage), each artifact's key, config version and a sha256
of its files: the same key with other bytes fails and names the version to bump. The bytes are
also checked to be the same on 1 and 2 torch threads.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import raydgm.config
import stage_digests

# The machine and libraries the digests were taken on (stage_digests.environment()): bytes of
# trained weights depend on them, so elsewhere the comparison is skipped (re-pin there if needed).
PINNED_ON = {"python": "3.11.7", "machine": "x86_64", "torch": "2.14.1+cu130", "cpu": "AVX512",
             "numpy": "2.4.6", "scipy": "1.17.1", "sklearn": "1.9.1", "pyarrow": "25.0.1"}
# "<stage>/<key>": (config class, its VERSION, sha256 of the artifact), in key order
PINNED = {
    "autoencoder/a60e78635ada3019": ("AutoencoderConfig", 1, "37bfdefeda1cf4136d86c9623ed647095341201517757af5259bd7af6670e985"),
    "contrastive/c1bfab4d8255629e": ("ContrastiveConfig", 1, "528dabbad24e9587731d5ac635ac0b7a7d6305baf4da387b408a201a801f88a6"),
    "density_ratio/15b27a135be61606": ("DensityRatioConfig", 4, "465e1c3ecf066fa4a2ffe32de3a4764a752a057f6f679da68491e4f3c44e41ad"),
    "density_ratio/7611db969dd2d2c1": ("DensityRatioConfig", 4, "02784a1ff0b47367251cec35abe93f23120f48c65c280a6e54e94b604de38cad"),
    "domain_classifier/7a8a24f22b84a844": ("DomainClassifierConfig", 1, "6ed9ea76b4e7188efc17d28fad4773e4baa3f39960300d1f108eb9e086d8f897"),
    "features/00567431dcbb219f": ("ExtractConfig", 2, "d0804bd4cadf84d2d1cb61c4c243590a0fb4882bcd503ea1e0aaf9824424f542"),
    "features/1849ea63995fd7f6": ("ExtractConfig", 2, "d2e401c7edc94854977a42b2de8a2de361bc078c934cd137e0fa2029a4ae3db5"),
    "features/5734bbc8d5305119": ("ExtractConfig", 2, "540d2cb455818d6ea84f99fb7ed0887e1a2ad371808e2f1e7492faa12660eb3f"),
    "features/a9adae6909eaffd9": ("ExtractConfig", 2, "828e650b19e90abe9b169763b919173e5ec8d8695f62d5bb0d2594db7d9302bd"),
    "features/b662f0e54769815e": ("ExtractConfig", 2, "f7efca30fda7aaa287895ab5a5fbb784712ec74de18cbbb6e82bcdcd552f7182"),
    "features/d03bd86c0ea02b91": ("ExtractConfig", 2, "5a2009b8b8f39591f5a5f89862805d487fe2ac28da09892161de543b5b1d6394"),
    "features/d6020d1082a11cbe": ("ExtractConfig", 2, "281d836edc5750a887f01be28cd643148ae578f961b731199100feb2ce0a821e"),
    "generate/05f7f73863261aa2": ("GenerateConfig", 2, "6def56cccd6dd774f03e55898dabf1870c8bce45ac1a523de511aba1a03d0780"),
    "generate/76476c076fd058ee": ("GenerateConfig", 2, "c0413aba9096db1814bf1b42b0f6db1ad90fbe80a068a3850b351e66c62e4e0d"),
    "quality/172136289325e131": ("QualityConfig", 1, "d82fec97b75f403f1f98f6a452fb3c4a38556a87ae450c162a96b87c7beeb4ba"),
    "resample/9dc215d70b16734f": ("ResampleConfig", 2, "9374f07fc9f9b13bde2c1223eb6c17ddfb0d99786ec409dfb62a34b5ad4dd928"),
    "resample/bd429ac0f211e767": ("ResampleConfig", 2, "6292a239ef0d1959aefd79423a4023620ef8176fe395503212d62501764a5553"),
    "train_generator/11601aea3d43a667": ("TrainGeneratorConfig", 3, "17d46fd23b6b3abf2ab033467004fabad3367c0fa902aa1f26dff74749891041"),
    "train_generator/94b08eab43594119": ("TrainGeneratorConfig", 3, "887b3ecea35f7965dfc77bb2ac6d5ba989377e8070c69d6874d2e5f713cf765e"),
}


def current(home: Path) -> dict[str, tuple[str, int, str]]:
    """The pinned table's rows for the artifacts in ``home``."""
    return {name: (cls, getattr(raydgm.config, cls).VERSION, digest)
            for name, (cls, digest) in stage_digests.digests(home).items()}


def table_text(rows: dict[str, tuple[str, int, str]]) -> str:
    return "PINNED = {\n" + "".join(f'    "{k}": ("{c}", {v}, "{d}"),\n' for k, (c, v, d) in rows.items()) + "}"


def compare(now: dict[str, tuple[str, int, str]], pinned: dict[str, tuple[str, int, str]]) -> list[str]:
    """What is wrong with the stage versions, one line per artifact ([] when nothing)."""
    problems = []
    for name in sorted(now.keys() | pinned.keys()):
        if name not in pinned:
            problems.append(f"{name} ({now[name][0]} v{now[name][1]}) is a new key (a version bump or a "
                            "config change): update this table")
        elif name not in now:
            problems.append(f"{name} is no longer made: update this table")
        elif now[name][2] != pinned[name][2]:
            cls, version = now[name][:2]
            problems.append(f"{name}: the same key gives other bytes than at version {pinned[name][1]}: "
                            f"bump {cls}.VERSION and update this table" if version == pinned[name][1] else
                            f"{name}: {cls} is now version {version}: update this table")
    return problems


def test_one_cache_key_gives_one_output(tiny_pipelines):
    if stage_digests.environment() != PINNED_ON:
        pytest.skip(f"digests pinned on {PINNED_ON}, this is {stage_digests.environment()}")
    now = current(tiny_pipelines)
    problems = compare(now, PINNED)
    assert not problems, "\n".join(problems) + "\n\nthe table as the code makes it now:\n" + table_text(now)


def test_the_guard_names_the_version_to_bump():
    pinned = {"density_ratio/ab": ("DensityRatioConfig", 2, "d1"), "resample/cd": ("ResampleConfig", 2, "d2"),
              "generate/ef": ("GenerateConfig", 1, "d3")}
    assert compare(pinned, pinned) == []
    changed = pinned | {"density_ratio/ab": ("DensityRatioConfig", 2, "d9")}
    assert compare(changed, pinned) == ["density_ratio/ab: the same key gives other bytes than at version 2: "
                                        "bump DensityRatioConfig.VERSION and update this table"]
    bumped = {k: v for k, v in pinned.items() if k != "resample/cd"} | {"resample/zz": ("ResampleConfig", 3, "d4")}
    assert compare(bumped, pinned) == ["resample/cd is no longer made: update this table",
                                       "resample/zz (ResampleConfig v3) is a new key (a version bump or a "
                                       "config change): update this table"]


def test_every_stage_is_pinned(tiny_pipelines):
    stages = {name.split("/")[0] for name in current(tiny_pipelines)}
    assert stages == {"train_generator", "generate", "autoencoder", "contrastive", "domain_classifier",
                      "features", "density_ratio", "resample", "quality"}
    assert stages == {name.split("/")[0] for name in PINNED}


def test_density_ratio_and_resample_give_the_same_bytes_on_1_and_2_threads(tiny_pipelines, tmp_path):
    """Their upstream artifacts copied, both stages recomputed in a process with 2 torch threads."""
    home = stage_digests.copy_upstream(tiny_pipelines, tmp_path / "home")
    proc = subprocess.run([sys.executable, str(Path(stage_digests.__file__)), str(home), "--threads", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout.strip().splitlines()[-1])
    one = {k: d for k, (_, d) in stage_digests.digests(tiny_pipelines, stage_digests.RECOMPUTED).items()}
    assert len(one) == 4 and two == one


def test_conv_nets_train_to_the_same_weights_on_1_and_2_threads(tmp_path):
    """The fit loops run on one intra-op thread (``training.common.one_thread``): without it the
    weight gradients of a convolution are summed in a thread-dependent order."""
    from raydgm.config import AutoencoderConfig, TrainGeneratorConfig
    from raydgm.data import load_dataset
    from raydgm.training import extractors, generators
    x = load_dataset("digits").split("train")[0][:256]
    vae = TrainGeneratorConfig.from_dict({"model": {"kind": "vae", "latent_dim": 4, "hidden_channels": [8]},
                                          "epochs": 1, "batch_size": 64})
    states = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            ae, _ = extractors.fit_autoencoder(x, None, AutoencoderConfig(channels=(8,), feature_dim=8, epochs=1),
                                               progress=False)
            gen, _ = generators.fit_generator(x, vae, tmp_path / f"vae-{threads}", progress=False)
            assert torch.get_num_threads() == threads          # restored
        finally:
            torch.set_num_threads(1)
        states.append({**{f"ae.{k}": v for k, v in ae.state_dict().items()},
                       **{f"vae.{k}": v for k, v in gen.state_dict().items()}})
    assert states[0].keys() == states[1].keys()
    assert [k for k in states[0] if not torch.equal(states[0][k], states[1][k])] == []
    assert np.isfinite(states[0]["ae.encoder.0.weight"].numpy()).all()
