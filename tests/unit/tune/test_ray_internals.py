"""What distributed/ray_internals.py relies on inside Ray Train; this fails loudly when Ray changes it."""
import inspect

import ray


def test_ray_is_the_version_the_internals_were_read_against():
    from domainft.distributed.ray_internals import RAY_VERSION

    assert ray.__version__ == RAY_VERSION, (
        f"Ray {ray.__version__}: re-read the placement-group workaround in distributed/ray_internals.py "
        f"(written for {RAY_VERSION}) against this version's Train v2 sources, then update RAY_VERSION")


def test_the_private_train_v2_api_it_uses_still_exists():
    from ray.train.v2._internal.execution.callback import WorkerGroupCallback
    from ray.train.v2._internal.execution.worker_group.placement_group_handle import PlacementGroupHandle
    from ray.train.v2._internal.execution.worker_group.state import WorkerGroupState
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup

    assert "worker_group" in inspect.signature(WorkerGroupCallback.after_worker_group_start).parameters
    assert callable(WorkerGroup.get_worker_group_state)
    assert "placement_group_handle" in WorkerGroupState.__dataclass_fields__
    assert isinstance(inspect.getattr_static(PlacementGroupHandle, "placement_group"), property)
