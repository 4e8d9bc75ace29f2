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
    "density_ratio/9c2f5766462e00d2": ("DensityRatioConfig", 2, "eebe1abe7aaca91c61c58795d3ec04bbe4abe46e6e5258698b56568aeb63a046"),
    "density_ratio/e6eba2bfddee09a0": ("DensityRatioConfig", 2, "f3758698382178d8eafeb670e93b01554c794de25836d78bf3e4c25d435b78d0"),
    "domain_classifier/7a8a24f22b84a844": ("DomainClassifierConfig", 1, "6ed9ea76b4e7188efc17d28fad4773e4baa3f39960300d1f108eb9e086d8f897"),
    "features/223beed4cbe00de4": ("ExtractConfig", 1, "f185600aa9230917d32359c355dbba2f874fad369047e2c772a57260544db7c6"),
    "features/5f1dccef69d29598": ("ExtractConfig", 1, "f8abcd8f8ba729a46875fae1310cf45729897022e548a5f6fd27877f6eae140a"),
    "features/8bae1c022b8e329e": ("ExtractConfig", 1, "251be541a4bd7e1fa23a0d41a373e261aef25acfb64ce1c84dde03fb2760cf07"),
    "features/b3ea6069dc80a14b": ("ExtractConfig", 1, "a9b14a073aa389ef3b837f958e7556ee5ca7c534f26c0fd01b20e132dc389f7b"),
    "features/cc1aad29ce94dce5": ("ExtractConfig", 1, "553fb4785b178e548a5b09b271283259032ef5e305ce9d5aa5d670c055b8c08a"),
    "features/d7ac75b1aca546ae": ("ExtractConfig", 1, "7fa2f28c9aee720c70bc4af92baedc061a16ff1b44e3913658266f403d38c8db"),
    "generate/207fef029b0dcd67": ("GenerateConfig", 1, "4a1eedefae351a83329bb73cf55cab00d19f32f98daf2d1b6ea6c757935fe2ed"),
    "generate/ec15a7578dd65942": ("GenerateConfig", 1, "7339050b3b7a16dff848da9010d182abe3b44bf75ec0f524ea6ac5e218e776a2"),
    "quality/ee15794d8292f9a3": ("QualityConfig", 1, "655c3c8a55ac34d3501c2ea6c8e6eb5aa0c1d6889048bb00403c02bd3125e0a3"),
    "resample/6419a0c8f1a4bcd4": ("ResampleConfig", 2, "c14c6e4ceccee85a8c2de31cf707fc966b69f88ddafcc047a236574538296b55"),
    "resample/938cff9b694e1b1a": ("ResampleConfig", 2, "e52f7abd6b4a2a6bcf11fec6a77f2c8003663a27bed119e37cb2b123825ce101"),
    "train_generator/15e1767c8ff9bfae": ("TrainGeneratorConfig", 2, "06d0bd0812396572f003af21e7ffb4e8fcaab8940afb43510306534c096a6de1"),
    "train_generator/62a916e16ee5825b": ("TrainGeneratorConfig", 2, "0a1457eb04bcb5ab0ccbf5cdbf9e423965aeb8f665f50267f65331ae24dea05f"),
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
