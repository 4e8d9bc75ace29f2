import json

import pytest

from raydgm.config import (ConfigError, DataConfig, DensityRatioConfig, PipelineConfig,
                           ResampleConfig, load_config, parse_override)


def test_defaults_and_hash_are_stable():
    a, b = DensityRatioConfig(), DensityRatioConfig.from_dict({})
    assert a == b and a.content_hash() == b.content_hash()
    assert len(a.content_hash()) == 16
    # order of keys in the source does not matter; any value change does
    c = DensityRatioConfig.from_dict({"seed": 0, "hidden_units": 1000})
    assert c.content_hash() == a.content_hash()
    assert a.replace(seed=1).content_hash() != a.content_hash()


def test_a_stage_version_from_2_on_changes_the_key_and_version_1_leaves_it_as_before():
    import hashlib

    class Bumped(DataConfig):
        VERSION = 2

    def by_hand(cfg, **extra):   # the hash as content_hash documents it
        blob = json.dumps({"stage": cfg.STAGE, "config": cfg.to_dict(), **extra}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert DataConfig.VERSION == 1 and DataConfig().content_hash() == by_hand(DataConfig())
    assert Bumped().content_hash() == by_hand(Bumped(), version=2) != DataConfig().content_hash()


def test_hash_differs_between_stages_with_equal_values():
    # two configs of different stages never share a directory name
    assert DataConfig().content_hash() != ResampleConfig().content_hash()


def test_int_accepted_for_float_but_not_string_or_float_for_int():
    assert DensityRatioConfig.from_dict({"learning_rate": 1}).learning_rate == 1.0
    with pytest.raises(ConfigError, match="'learning_rate'"):
        DensityRatioConfig.from_dict({"learning_rate": "0.1"})
    with pytest.raises(ConfigError, match="'hidden_units'"):
        DensityRatioConfig.from_dict({"hidden_units": 2.5})
    with pytest.raises(ConfigError, match="'standardize'"):
        DensityRatioConfig.from_dict({"standardize": "yes"})


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'hiden_units'.*did you mean 'hidden_units'"):
        DensityRatioConfig.from_dict({"hiden_units": 10})


def test_an_unknown_key_under_a_mapping_of_configs_lists_what_its_values_accept():
    """``generators`` maps names to TrainGeneratorConfig: a key under a name is checked against
    that class (it once came with an empty list of known keys), and a key that lives one level
    down is pointed to, with its choices."""
    from raydgm.config import SweepConfig, TrainGeneratorConfig
    with pytest.raises(ConfigError) as info:
        SweepConfig.load(None, ["generators.foo.kind=bar"])
    assert str(info.value) == (
        "SweepConfig: unknown key 'generators.foo.kind' (did you mean 'generators.foo.model.kind'? "
        "one of baseline, vae, pixelcnnpp, skewed, contaminated); known keys: " + ", ".join(sorted(TrainGeneratorConfig.model_fields)))
    assert "model, seed" in str(info.value) and "epochs" in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown key 'generators\.foo\.epoch' \(did you mean 'epochs'\?\)"):
        SweepConfig.load(None, ["generators.foo.epoch=3"])


def test_an_unknown_key_inside_one_kind_of_model_names_that_kinds_keys():
    """pydantic's error path holds the union member's tag (``model.vae.latent``); the message
    gives the path as written and the member's keys."""
    with pytest.raises(ConfigError, match=r"unknown key 'generator\.model\.latent' \(did you mean "
                                          r"'latent_dim'\?\); known keys: hidden_channels, kind, latent_dim"):
        PipelineConfig.load(None, ["generator.model.kind=vae", "generator.model.latent=3"])
    with pytest.raises(ConfigError, match=r"'generator\.model\.kind'\? one of baseline, vae, pixelcnnpp, skewed, contaminated"):
        PipelineConfig.load(None, ["generator.kind=vae"])


def test_out_of_range_and_cross_field_errors_name_the_key():
    with pytest.raises(ConfigError, match="'hidden_units'.*greater than or equal to 1"):
        DensityRatioConfig.from_dict({"hidden_units": 0})
    with pytest.raises(ConfigError, match="'alpha'"):
        ResampleConfig.from_dict({"alpha": 1.5})
    with pytest.raises(ConfigError, match="'method'"):
        ResampleConfig.from_dict({"method": "bogus"})
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        DataConfig.from_dict({"val_fraction": 0.6, "test_fraction": 0.5})
    with pytest.raises(ConfigError, match="log_clip_min"):
        ResampleConfig.from_dict({"log_clip_min": 2.0, "log_clip_max": 1.0})
    with pytest.raises(ConfigError, match="npz"):
        DataConfig.from_dict({"name": "npz"})


def test_nan_is_rejected():
    with pytest.raises(ConfigError, match="'learning_rate'"):
        DensityRatioConfig.from_dict({"learning_rate": float("nan")})


def test_yaml_file_plus_dotted_overrides(tmp_path):
    path = tmp_path / "pipe.yaml"
    path.write_text("data:\n  name: digits\ndensity_ratio:\n  hidden_units: 64\n")
    cfg = PipelineConfig.load(path, ["density_ratio.hidden_units=32", "resample.method=residual",
                                     "resample.num_samples=null", "data.seed=3"])
    assert cfg.data.name == "digits" and cfg.data.seed == 3
    assert cfg.density_ratio.hidden_units == 32
    assert cfg.resample.method == "residual" and cfg.resample.num_samples is None
    with pytest.raises(ConfigError, match="unknown key 'density_ratio.hidden'"):
        PipelineConfig.load(path, ["density_ratio.hidden=3"])


def test_null_over_a_nested_config_removes_it(tmp_path):
    """``--set generators.vae=null`` (or ``vae: null`` in a file) drops a preset's generator; a
    nested config set to null falls back to its default; a null leaf stays null."""
    from raydgm.config.base import merge
    from raydgm.config import SweepConfig
    from raydgm.sweeps.cli import load_sweep
    cfg = load_sweep(SweepConfig, "default", overrides=("generators.vae=null",))
    assert list(cfg.generators) == ["baseline"]
    path = tmp_path / "drop.yaml"
    path.write_text("generators:\n  baseline: null\n")
    assert list(load_sweep(SweepConfig, "default", path).generators) == ["vae"]
    base = {"a": {"b": 1}, "c": 2}
    assert merge(base, {"a": None, "c": None}) == {"c": None}
    cfg = PipelineConfig.load(None, ["density_ratio=null"], base={"density_ratio": {"hidden_units": 3}})
    assert cfg.density_ratio == PipelineConfig().density_ratio


def test_json_file_round_trip(tmp_path):
    cfg = PipelineConfig().replace(data=DataConfig(name="digits").to_dict())
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert PipelineConfig.load(path) == cfg


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found: .*nope.yaml"):
        load_config("data", tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config("data", bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config("data", listy)


def test_unknown_stage_and_bad_override():
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        load_config("nope")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")
    assert parse_override("a.b=0.5") == ("a.b", 0.5)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])


def test_configs_are_frozen():
    cfg = DataConfig()
    with pytest.raises(Exception):
        cfg.seed = 3


# Measured at commit e550e12 (classes as on main 351193f, before the two extractor configs shared a base) with
# ``cfg.content_hash()``: the artifact directories of the trained extractors. A refactor of the
# classes must leave every one of them as it was, or every cached extractor is retrained.
EXTRACTOR_HASHES = {
    ("DomainClassifierConfig", "defaults"): "3fb6b081b16b8fe4",
    ("AutoencoderConfig", "defaults"): "b43f4089220185f0",
    ("DomainClassifierConfig", "every key set"): "12cd371ab6830c36",
    ("AutoencoderConfig", "every key set"): "c8ce70c680eabb6f",
    ("ContrastiveConfig", "defaults"): "c0bb3dc4330de930",
    ("FeaturesConfig", "defaults"): "30ded2937a5e6d75",   # with contrastive (before it: dab818f0d4995971); no stage key
}
EVERY_KEY = {"DomainClassifierConfig": dict(channels=[8, 16, 32], feature_dim=64, epochs=3, batch_size=64,
                                            learning_rate=1e-3, patience=2, device="cuda", seed=4),
             "AutoencoderConfig": dict(channels=[4], feature_dim=16, epochs=2, batch_size=16, learning_rate=1e-2,
                                       patience=5, device="cuda", seed=1)}


@pytest.mark.parametrize("name, case", sorted(EXTRACTOR_HASHES))
def test_extractor_config_hashes_are_as_measured_before_their_shared_base(name, case):
    import raydgm.config as C
    cls = getattr(C, name)
    cfg = cls() if case == "defaults" else cls.from_dict(EVERY_KEY[name])
    assert cfg.content_hash() == EXTRACTOR_HASHES[name, case]


def test_the_extractor_configs_keep_their_own_defaults_and_checks():
    from raydgm.config import AutoencoderConfig, DomainClassifierConfig
    assert (DomainClassifierConfig().channels, DomainClassifierConfig().feature_dim) == ((16, 32), 128)
    assert (AutoencoderConfig().channels, AutoencoderConfig().batch_size, AutoencoderConfig().patience) == ((8, 16), 32, 2)
    for cls in (DomainClassifierConfig, AutoencoderConfig):
        with pytest.raises(ConfigError, match="channels must list at least one positive channel count"):
            cls.from_dict({"channels": [16, 0]})
        with pytest.raises(ConfigError, match="'feature_dim'"):
            cls.from_dict({"feature_dim": 1})
        with pytest.raises(ConfigError, match="'batch_size'"):
            cls.from_dict({"batch_size": 0})


def test_known_bias_generators_load_from_overrides_and_the_sweep_axis():
    from raydgm.config import SweepConfig
    cfg = PipelineConfig.load(None, ["generator.model.kind=skewed", "generator.model.class_mix=[1,2,3]"])
    assert cfg.generator.model.kind == "skewed" and cfg.generator.model.class_mix == (1.0, 2.0, 3.0)
    assert PipelineConfig.load(None, ["generator.model.kind=skewed"]).generator.model.class_mix == "linear"
    sweep = SweepConfig.from_dict({"generators": {"skewed": {"model": {"kind": "skewed", "class_mix": "reversed"}},
                                                  "junk": {"model": {"kind": "contaminated", "junk_fraction": 0.2}}}})
    pipelines = sweep.pipelines()
    assert [p.generator.model.kind for p in pipelines.values()] == ["skewed", "contaminated"]
    assert pipelines["junk"].generator.model.junk_fraction == 0.2
    with pytest.raises(ConfigError, match="'generator.model.contaminated.junk_fraction'"):
        PipelineConfig.load(None, ["generator.model.kind=contaminated", "generator.model.junk_fraction=0"])
    with pytest.raises(ConfigError, match="generator.model.skewed.class_mix"):
        PipelineConfig.load(None, ["generator.model.kind=skewed", "generator.model.class_mix=[1,-2]"])
