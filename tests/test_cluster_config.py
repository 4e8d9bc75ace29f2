"""cluster.yaml, checked offline: Ray's schema and config validation, our stricter key check
where Ray accepts any key, the image pinned to pyproject's Ray, no credentials, loopback-only
services, storage under $RAYDGM_SHARED, a comment on every key, and the README's on-premise
variant. No AWS, no boto3: only what `ray up` checks before it contacts the cloud."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import ray.autoscaler
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
MLFLOW_SERVER = ("raydgm mlflow-server --backend-store-uri sqlite:///$HOME/mlflow/mlflow.db "
                 "--artifacts-destination $RAYDGM_SHARED/mlartifacts --host 127.0.0.1 --port 5000")

# The README's on-premise variant ("Run on a cluster"): this block replaces those keys of
# cluster.yaml, and LOCAL_DROPPED are deleted. Keep it identical to the README's block.
LOCAL_PROVIDER_YAML = """\
provider:  # your own machines instead of EC2
  type: local  # machines you already have: ray up connects to them over SSH, launches nothing
  head_ip: 10.0.0.10  # runs the sweep driver, Ray's head and MLflow (no GPU needed)
  worker_ips: [10.0.0.11, 10.0.0.12]  # the GPU machines; all of them join the cluster
auth:  # how ray up logs in to them
  ssh_user: raydgm  # a user with Docker and passwordless sudo on every machine
  ssh_private_key: ~/.ssh/id_ed25519  # a path on your laptop; the key itself stays there
initialization_commands:  # on each machine, before docker starts
  - mountpoint -q /mnt/shared  # stop unless the shared NFS directory is mounted on this machine
"""
LOCAL_DROPPED = ("available_node_types", "head_node_type", "max_workers")

# Where Ray's schema accepts any key (provider: additionalProperties true; node_config and
# resources: any object), the keys Ray or EC2 actually read. Add a key here when you use a new one.
PROVIDER_KEYS = {   # ray/autoscaler/_private/aws/config.py, aws/node_provider.py, autoscaler.py
    "aws": {"type", "region", "availability_zone", "cache_stopped_nodes", "use_internal_ips",
            "use_external_head_ip", "security_group", "key_pair", "cloudwatch",
            "disable_node_updaters", "disable_launch_config_check", "foreground_node_launch",
            "worker_liveness_check"},
    "local": {"type", "head_ip", "worker_ips", "coordinator_address", "external_head_ip"},
}
EC2_RUN_INSTANCES = {   # boto3 EC2.Client.run_instances parameters, plus Ray's SubnetIds
    "BlockDeviceMappings", "ImageId", "InstanceType", "Ipv6AddressCount", "Ipv6Addresses",
    "KernelId", "KeyName", "MaxCount", "MinCount", "Monitoring", "Placement", "RamdiskId",
    "SecurityGroupIds", "SecurityGroups", "SubnetId", "UserData", "AdditionalInfo", "ClientToken",
    "DisableApiTermination", "DryRun", "EbsOptimized", "IamInstanceProfile",
    "InstanceInitiatedShutdownBehavior", "NetworkInterfaces", "PrivateIpAddress",
    "ElasticGpuSpecification", "ElasticInferenceAccelerators", "TagSpecifications",
    "LaunchTemplate", "InstanceMarketOptions", "CreditSpecification", "CpuOptions",
    "CapacityReservationSpecification", "HibernationOptions", "LicenseSpecifications",
    "MetadataOptions", "EnclaveOptions", "PrivateDnsNameOptions", "MaintenanceOptions",
    "DisableApiStop", "EnablePrimaryIpv6", "NetworkPerformanceOptions", "Operator", "SubnetIds",
}
RESOURCE_NAMES = {"CPU", "GPU", "memory", "object_store_memory"}   # no custom resources used

SECRETS = {
    "AWS access key id": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    "AWS credential setting": r"(?i)aws_(access_key_id|secret_access_key|session_token|credentials)",
    "password, secret or token value": r"(?i)(password|passwd|secret|token|api[_-]?key)\s*[:=]\s*\S",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "AWS account id or ARN": r"\b\d{12}\b|\barn:aws",
}


# ---------------------------------------------------------------------------- helpers

def load(text: str | None = None) -> dict[str, Any]:
    return yaml.safe_load(CLUSTER.read_text() if text is None else text)


def changed_copy(old: str, new: str) -> tuple[dict[str, Any], str]:
    """cluster.yaml's text with ``old`` (which must be there) replaced by ``new``, parsed and raw."""
    text = CLUSTER.read_text()
    assert old in text
    bad = text.replace(old, new)
    return load(bad), bad


def ray_validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` checks before contacting the cloud: Ray's JSON schema on the file as
    written, then prepare_config (provider defaults, docker, per-type min/max workers) and
    validate_config on the result. Returns the prepared config."""
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def strict_check(cfg: dict[str, Any]) -> None:
    """ValueError naming every key Ray's schema lets through but nothing reads."""
    kind = cfg["provider"]["type"]
    unknown = [f"provider.{k}" for k in cfg["provider"] if k not in PROVIDER_KEYS[kind]]
    for name, node in cfg.get("available_node_types", {}).items():
        unknown += [f"available_node_types.{name}.resources.{k}"
                    for k in node["resources"] if k not in RESOURCE_NAMES]
        if kind == "aws":
            unknown += [f"available_node_types.{name}.node_config.{k}"
                        for k in node["node_config"] if k not in EC2_RUN_INSTANCES]
    if unknown:
        raise ValueError(f"unknown keys (misspelled?): {', '.join(unknown)}")


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    prepared = ray_validate(cfg)
    strict_check(cfg)
    return prepared


def uncommented_keys(text: str) -> list[tuple[int, str]]:
    """(line number, key) of each mapping key whose line has no trailing ``#`` comment and no
    comment line directly above. A ``#`` inside a scalar (quoted, or a block scalar's text) or
    not preceded by a space is no comment."""
    lines = text.splitlines()
    inside: list[tuple[tuple[int, int], tuple[int, int]]] = []   # scalar spans, (line, col)
    keys: list[tuple[int, str]] = []
    tokens = list(yaml.scan(text))
    for tok, nxt in zip(tokens, tokens[1:] + [None]):
        if isinstance(tok, yaml.ScalarToken):
            start = (tok.start_mark.line + 1, 0) if tok.style in ("|", ">") else \
                (tok.start_mark.line, tok.start_mark.column)
            inside.append((start, (tok.end_mark.line, tok.end_mark.column)))
        if isinstance(tok, yaml.KeyToken) and isinstance(nxt, yaml.ScalarToken):
            keys.append((nxt.start_mark.line, nxt.value))

    def has_comment(n: int) -> bool:
        for col, char in enumerate(lines[n]):
            if char == "#" and (col == 0 or lines[n][col - 1] in " \t") \
                    and not any(a <= (n, col) < b for a, b in inside):
                return True
        return False

    return [(n + 1, key) for n, key in keys
            if not has_comment(n) and not (n > 0 and lines[n - 1].lstrip().startswith("#"))]


def ray_pin(pyproject: str) -> str:
    """The exact version in pyproject's ``ray[...]==X`` requirement; ValueError otherwise."""
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads(pyproject)["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps if Requirement(d).name == "ray"]
    if len(reqs) != 1:
        raise ValueError(f"pyproject.toml lists ray {len(reqs)} times, expected once")
    specs = list(reqs[0].specifier)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        raise ValueError(f"ray is not pinned exactly in pyproject.toml ({reqs[0]}); cluster.yaml's "
                         "image tag must equal one version: pin it as ray[...]==X.Y.Z")
    return specs[0].version


def secrets_in(text: str) -> list[str]:
    return [name for name, pattern in SECRETS.items() if re.search(pattern, text)]


def shared_env(cfg: dict[str, Any]) -> dict[str, str]:
    """The ``export NAME=value`` lines setup_commands write into ~/.raydgm_env."""
    return dict(re.findall(r"export (\w+)=([^'\s]+)", " ".join(cfg["setup_commands"])))


def rename(cfg: dict[str, Any], path: tuple, old: str, new: str) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    node = cfg
    for part in path:
        node = node[part]
    node[new] = node.pop(old)
    return cfg


def local_variant(cfg: dict[str, Any], drop: tuple[str, ...] = LOCAL_DROPPED) -> dict[str, Any]:
    out = {k: v for k, v in copy.deepcopy(cfg).items() if k not in drop}
    return out | yaml.safe_load(LOCAL_PROVIDER_YAML)


# ---------------------------------------------------------------------------- tests

def test_ray_accepts_cluster_yaml_and_our_strict_check_too():
    prepared = validate(load())
    types = prepared["available_node_types"]
    assert types[prepared["head_node_type"]]["max_workers"] == 0   # filled in by Ray
    # the head runs setup_commands first (they write ~/.raydgm_env), then its own (which append)
    assert prepared["head_setup_commands"][:len(prepared["setup_commands"])] == prepared["setup_commands"]


W = ("available_node_types", "ray.worker.gpu")


@pytest.mark.parametrize("path, good, bad", [
    ((), "max_workers", "max_wokers"),                       # top level: Ray's schema
    (W, "min_workers", "min_worker"),                        # a node type: Ray's schema
    (("docker",), "image", "imagee"),                        # docker: Ray's schema
    (("auth",), "ssh_user", "ssh_usr"),                      # auth: Ray's schema
    (("provider",), "cache_stopped_nodes", "cache_stoped_nodes"),   # ours only
    ((*W, "node_config"), "InstanceType", "InstanceTyp"),    # ours only
    ((*W, "resources"), "GPU", "GPUs"),                      # ours only
])
def test_a_misspelled_key_fails_naming_it(path, good, bad):
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(bad)):
        validate(rename(load(), path, good, bad))


@pytest.mark.parametrize("path, good, bad", [
    (("provider",), "cache_stopped_nodes", "cache_stoped_nodes"),   # silently ignored by Ray
    ((*W, "node_config"), "InstanceType", "InstanceTyp"),    # boto3 refuses it only at launch
    ((*W, "resources"), "GPU", "GPUs"),                      # a custom resource: no GPU trials
])
def test_strict_check_catches_what_ray_alone_lets_through(path, good, bad):
    """Ray's own validation accepts these misspellings (why strict_check exists; if Ray starts
    catching one, its row can go); strict_check refuses each, naming it."""
    cfg = rename(load(), path, good, bad)
    ray_validate(cfg)
    with pytest.raises(ValueError, match=re.escape(bad)):
        strict_check(cfg)


def test_docker_image_tag_is_the_ray_pin_of_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = ray_pin(pyproject)
    image = load()["docker"]["image"]
    repo, _, tag = image.partition(":")
    assert repo == "rayproject/ray" and tag.split("-")[0] == version, \
        f"docker.image {image!r} does not match ray=={version} in pyproject.toml"
    tomllib = pytest.importorskip("tomllib")
    py = re.search(r"-py3(\d+)", tag)
    assert py and f"3.{py.group(1)}" in SpecifierSet(tomllib.loads(pyproject)["project"]["requires-python"])


@pytest.mark.parametrize("dependency", ["ray[tune,data]>=2.60.0", "ray[tune]==2.60.*", "ray"])
def test_a_ray_requirement_that_is_not_exact_fails_clearly(dependency):
    pyproject = f'[project]\nname = "x"\ndependencies = ["numpy", "{dependency}"]\n'
    with pytest.raises(ValueError, match="not pinned exactly"):
        ray_pin(pyproject)
    assert ray_pin(pyproject.replace(dependency, "ray[data]==9.1.0")) == "9.1.0"


def test_no_credentials():
    assert secrets_in(CLUSTER.read_text()) == []
    assert secrets_in(LOCAL_PROVIDER_YAML) == []
    assert "aws_credentials" not in load()["provider"]


@pytest.mark.parametrize("line, kind", [
    ("    aws_access_key_id: foo", "AWS credential setting"),
    ("# key AKIAIOSFODNN7EXAMPLE", "AWS access key id"),
    ("  - echo secret: hunter2", "password, secret or token value"),
    ("  - export MLFLOW_TRACKING_TOKEN=abc", "password, secret or token value"),
    ("  ssh_private_key: -----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
    ("      IamInstanceProfile: {Arn: arn:aws:iam::123456789012:instance-profile/x}",
     "AWS account id or ARN"),
])
def test_the_credential_check_finds_a_planted_one(line, kind):
    assert kind in secrets_in(CLUSTER.read_text() + line + "\n")


def loopback_problems(cfg: dict[str, Any], text: str) -> list[str]:
    head = " ; ".join(cfg["head_start_ray_commands"])
    problems = []
    if re.findall(r"--dashboard-host[= ](\S+)", head) != ["127.0.0.1"]:
        problems.append("ray start --head must bind the dashboard with --dashboard-host=127.0.0.1")
    if not re.search(re.escape(MLFLOW_SERVER) + r"\s*>>?\s*\S+\s+2>&1[^;]*&", head):
        problems.append(f"the head must start `{MLFLOW_SERVER}` in the background, logging to a file")
    if "0.0.0.0" in text:
        problems.append("0.0.0.0 appears in cluster.yaml")
    if "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000" not in " ".join(cfg["head_setup_commands"]):
        problems.append("the head must export MLFLOW_TRACKING_URI=http://127.0.0.1:5000")
    return problems


def test_dashboard_and_mlflow_listen_on_loopback_only():
    text = CLUSTER.read_text()
    assert loopback_problems(load(), text) == []


@pytest.mark.parametrize("old, new", [
    ("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"),
    ("--host 127.0.0.1 --port 5000", "--host 0.0.0.0 --port 5000"),
    ("--port 5000\n    >> ~/mlflow/server.log", "--port 5000\n    "),   # not logged, not backgrounded
    ("MLFLOW_TRACKING_URI=http://127.0.0.1:5000", "MLFLOW_TRACKING_URI=http://mlflow.example:5000"),
])
def test_the_loopback_check_fails_on_a_changed_copy(old, new):
    assert loopback_problems(*changed_copy(old, new))


def storage_problems(cfg: dict[str, Any], text: str) -> list[str]:
    env = shared_env(cfg)
    shared = env.get("RAYDGM_SHARED", "")
    problems = [] if shared.startswith("/") else [f"RAYDGM_SHARED={shared!r} is not an absolute path"]
    for name in ("RAYDGM_HOME", "RAYDGM_TUNE_STORAGE"):
        if not env.get(name, "").startswith("$RAYDGM_SHARED/"):
            problems.append(f"{name}={env.get(name)!r} is not under $RAYDGM_SHARED")
    if f"-v {shared}:{shared}" not in cfg["docker"]["run_options"]:
        problems.append(f"docker.run_options does not mount {shared} into the container")
    if f"mountpoint -q {shared}" not in cfg["initialization_commands"]:
        problems.append(f"initialization_commands do not check that {shared} is mounted")
    if not any("'source ~/.raydgm_env' >> ~/.bashrc" in c for c in cfg["setup_commands"]):
        problems.append("~/.bashrc does not source ~/.raydgm_env, so Ray would not see RAYDGM_*")
    if "--artifacts-destination $RAYDGM_SHARED/" not in " ".join(cfg["head_start_ray_commands"]):
        problems.append("MLflow's --artifacts-destination is not under $RAYDGM_SHARED")
    if "s3://" in text:
        problems.append("cluster.yaml names an s3:// bucket")
    return problems


def test_raydgm_storage_lives_under_the_shared_directory():
    text = CLUSTER.read_text()
    assert storage_problems(load(), text) == []
    assert shared_env(load())["RAYDGM_SHARED"] == "/mnt/shared"


@pytest.mark.parametrize("old, new", [
    ("'export RAYDGM_HOME=$RAYDGM_SHARED/home'", "'export RAYDGM_HOME=s3://my-bucket/home'"),
    ("'export RAYDGM_TUNE_STORAGE=$RAYDGM_SHARED/tune'", "'export RAYDGM_TUNE_STORAGE=/data/tune'"),
    ("-v /mnt/shared:/mnt/shared", "-v /mnt/other:/mnt/shared"),
    ("  - mountpoint -q /mnt/shared  #", "  - true  #"),
    ("echo 'source ~/.raydgm_env' >> ~/.bashrc", "true"),
    ("--artifacts-destination $RAYDGM_SHARED/mlartifacts", "--artifacts-destination /data/mlartifacts"),
])
def test_the_storage_check_fails_on_a_changed_copy(old, new):
    assert storage_problems(*changed_copy(old, new))


def test_cpu_head_autoscaling_gpu_workers_and_the_repository_copy():
    cfg = load()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert [(w["min_workers"], w["resources"]["GPU"] >= 1) for w in workers] == [(0, True)]
    assert 1 <= workers[0]["max_workers"] <= cfg["max_workers"]
    head_start, worker_start = cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]
    assert head_start[0] == worker_start[0] == "ray stop"
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start[1]
    port = re.search(r"--port=(\d+)", head_start[1]).group(1)
    assert f"--address=$RAY_HEAD_IP:{port}" in worker_start[1]
    assert cfg["file_mounts"] == {"~/raydgm": "."}
    excluded = {p.strip("/") for p in cfg["rsync_exclude"]}
    assert {".venv", "artifacts", "mlflow.db", "mlruns", "mlartifacts"} <= excluded
    assert not any(p.strip("/*").startswith(".git") for p in cfg["rsync_exclude"])   # code_version()
    assert "pip install --quiet -e ~/raydgm" in cfg["setup_commands"]               # no [dev]


def test_every_key_has_a_comment():
    assert uncommented_keys(CLUSTER.read_text()) == []
    assert uncommented_keys(LOCAL_PROVIDER_YAML) == []


def test_the_comment_check_names_an_uncommented_key():
    text = CLUSTER.read_text()
    line = next(x for x in text.splitlines() if x.startswith("max_workers:"))
    bad = text.replace(line, line.split("#")[0].rstrip())
    assert uncommented_keys(bad) == [(text.splitlines().index(line) + 1, "max_workers")]


@pytest.mark.parametrize("text, expected", [
    ("a: 1  # why\n# why b\nb: 2\n", []),
    ("a: 1\n", [(1, "a")]),
    ("# a comment, then a blank line\n\na: 1\n", [(3, "a")]),
    ('a: "x # inside quotes"\n', [(1, "a")]),
    ("a: x#y\n", [(1, "a")]),
    ("a: >-  # folded\n  text # inside the block\n", []),
    ("a: >-\n  text # inside the block\n", [(1, "a")]),
    ("a:  # list\n  - b: 1\n  # why c\n  - c: {d: 2}  # flow keys share the line\n", [(2, "b")]),
])
def test_the_comment_check_on_small_documents(text, expected):
    assert uncommented_keys(text) == expected


def test_the_on_premise_variant_is_valid():
    prepared = validate(local_variant(load()))
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["max_workers"] == len(yaml.safe_load(LOCAL_PROVIDER_YAML)["provider"]["worker_ips"])
    assert storage_problems(local_variant(load()), LOCAL_PROVIDER_YAML) == []


def test_the_on_premise_variant_needs_its_deletions():
    import click
    with pytest.raises(click.ClickException, match="available_node_types"):
        validate(local_variant(load(), drop=("head_node_type", "max_workers")))
    with pytest.raises(ValueError, match="provider.region"):
        validate(local_variant(load()) | {"provider": yaml.safe_load(LOCAL_PROVIDER_YAML)["provider"]
                                          | {"region": "us-west-2"}})


def test_the_readme_shows_the_tested_on_premise_variant():
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "cluster.md").read_text(), re.S)
    local = [b for b in blocks if "type: local" in b]
    assert LOCAL_PROVIDER_YAML in local, "README's on-premise block differs from LOCAL_PROVIDER_YAML"


def test_the_readme_kuberay_job_uses_the_pinned_ray_version():
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "cluster.md").read_text(), re.S)
    jobs = [yaml.safe_load(b) for b in blocks if "kind: RayJob" in b]
    assert len(jobs) == 1, "README shows one KubeRay RayJob"
    job = jobs[0]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray_pin((ROOT / "pyproject.toml").read_text())
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"], "a CPU head, as in cluster.yaml"
    for group in spec["workerGroupSpecs"]:
        worker = group["template"]["spec"]["containers"][0]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
        env = {e["name"]: e["value"] for e in worker["env"]}
        assert env["RAYDGM_HOME"].startswith(env["RAYDGM_SHARED"])
        assert env["RAYDGM_TUNE_STORAGE"].startswith(env["RAYDGM_SHARED"])


def test_the_gpu_workers_fit_the_paper_pipeline_run_on_a_gpu_node():
    """README: ``--pipeline-only`` holds one GPU for its driver while the generation (then the
    feature) actors ask for theirs; the autoscaler must be allowed that many GPUs at once."""
    from raydgm.config import SweepConfig
    from raydgm.sweeps.cli import load_sweep
    paper = load_sweep(SweepConfig, "paper").pipeline
    cfg = load()
    gpu_types = [t for t in cfg["available_node_types"].values() if t["resources"].get("GPU")]
    gpus = sum(t["max_workers"] * t["resources"]["GPU"] for t in gpu_types)
    for pool in (paper.generate, paper.features):
        assert pool.num_gpus_per_actor is not None, "explicit: the cluster may start without GPU nodes"
        assert 1 + pool.num_actors * pool.num_gpus_per_actor <= gpus
