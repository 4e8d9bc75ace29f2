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
    "density_ratio/4ceb3c8afe9344ec": ("DensityRatioConfig", 2, "597ae57d7f89b9068aebf1cccce4fd750e8ed0704c93ee25e926c5c085b9a57c"),
    "density_ratio/59128f42375dab53": ("DensityRatioConfig", 2, "fe079575c6cdeb42c984e1d0e22c6e86128c47c386abccbe9b274bf1c0aa803f"),
    "domain_classifier/7a8a24f22b84a844": ("DomainClassifierConfig", 1, "6ed9ea76b4e7188efc17d28fad4773e4baa3f39960300d1f108eb9e086d8f897"),
    "features/25e65da5fb0506d8": ("ExtractConfig", 1, "2b08f1242d0dc7d2090b1197810a8287104ff908fdc161ea9ef2818f720c0985"),
    "features/6b368ce1b6d4dafa": ("ExtractConfig", 1, "933f4ccce1312a2a612fbd2841b52c60f1a699af4bbed949942e33865698d5c1"),
    "features/b3ea6069dc80a14b": ("ExtractConfig", 1, "a9b14a073aa389ef3b837f958e7556ee5ca7c534f26c0fd01b20e132dc389f7b"),
    "features/be8cf5e53666b2ee": ("ExtractConfig", 1, "d9b6a4ea4cf5fbb5a1fb8c0c1e8ec7e9dff86e90b709c32b64280ebbf9483376"),
    "features/cc1aad29ce94dce5": ("ExtractConfig", 1, "553fb4785b178e548a5b09b271283259032ef5e305ce9d5aa5d670c055b8c08a"),
    "features/d7ac75b1aca546ae": ("ExtractConfig", 1, "7fa2f28c9aee720c70bc4af92baedc061a16ff1b44e3913658266f403d38c8db"),
    "generate/3c90b6c53c35c939": ("GenerateConfig", 1, "195dfebff1a88ff8f8ada03ab8a63a36fabdd4665d43815b7123885bb4336afd"),
    "generate/4715cb18d1525369": ("GenerateConfig", 1, "d3c8047edde55564fe20490b271881b4cf6b8c01304f540527b03297698dea16"),
    "quality/e6892ab777761c97": ("QualityConfig", 1, "6ae04364649421eb4c98029b098646a05c68ae691a5dc040742daa5a2ea4fc14"),
    "resample/7b99a520ea8c00ad": ("ResampleConfig", 2, "1739da931364fe4d234bf55bd7b8fc6a371f77de9adf9751d7bc26b8e866a461"),
    "resample/9e5d3693471092d4": ("ResampleConfig", 2, "6eebe7654dc03064c3896bcb478f6db2b046353fb207d846082e71ad3a4a6691"),
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
    assert stages == {"train_generator", "generate", "autoencoder", "domain_classifier", "features",
                      "density_ratio", "resample", "quality"}
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
