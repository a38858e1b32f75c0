"""One local Ray instance for the whole integration session, with small resources.

Every integration test gets the `integration` marker and a timeout: the known Ray/DeepSpeed
hangs on a small machine are silent.
"""
import os

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=int(os.environ.get("DOMAINFT_TEST_CPUS", "2")), include_dashboard=False,
                 object_store_memory=256 * 1024**2, log_to_driver=True,
                 runtime_env={"env_vars": {k: os.environ[k] for k in (
                     "DS_ACCELERATOR", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE") if k in os.environ}})
    yield ray
    ray.shutdown()
