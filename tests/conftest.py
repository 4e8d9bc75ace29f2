import pytest
import torch

# A test that uses one of these (itself or through another fixture) runs a real Ray cluster or a
# whole sweep: it is marked ``integration``, which ``make test-fast`` leaves out.
INTEGRATION_FIXTURES = {"ray_local", "smoke_sweep"}


@pytest.hookimpl(tryfirst=True)      # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        if INTEGRATION_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def torch_one_thread():
    """Tiny models train many times faster on one intra-op thread on a loaded 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole session (2 CPUs, as on CI)."""
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=1024**3)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """``sweeps/semantic_weight.py --smoke-test`` run once per session in its own RAYDGM_HOME
    (MLflow in ``home/mlflow.db``): the sweep test, the notebook and the multi-node run read it."""
    from smoke import run_smoke
    return run_smoke(tmp_path_factory.mktemp("smoke") / "home")


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory, ray_local):
    """``stage_digests.run``'s two tiny digits pipelines (baseline; contaminated, with quality),
    computed once on one torch thread; returns their RAYDGM_HOME."""
    import stage_digests
    assert torch.get_num_threads() == 1
    home = tmp_path_factory.mktemp("tiny") / "home"
    stage_digests.run(home)
    return home
