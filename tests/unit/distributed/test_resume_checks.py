"""Driver-side checks before fit(): which runs resume, which start afresh, which are refused; and
which worker failures are the user's (no Ray cluster is started here)."""
import json

import pytest
from ray.train import WorkerGroupError

from domainft.config import ConfigError
from domainft.distributed.checkpoints import check_resumable
from domainft.distributed.trainer import user_error_of
from domainft.errors import UserError

IDENTITY = {"optim.lr": 5e-5, "train.epochs": 3, "data.prepared_fingerprint": "abc"}


def _checkpoint(storage, name, epoch, identity):
    d = storage / name / f"epoch_{epoch:03d}"
    d.mkdir(parents=True)
    (d / "domainft_state.json").write_text(json.dumps({"epoch": epoch, "identity": identity}))


def test_same_identity_resumes_silently(tmp_path, capsys):
    _checkpoint(tmp_path, "run-1", 1, IDENTITY)
    _checkpoint(tmp_path, "run-1", 2, IDENTITY)
    check_resumable(str(tmp_path), "run-1", IDENTITY, explicit=True)
    assert capsys.readouterr().out == ""


def test_explicit_name_with_another_config_is_refused_naming_the_keys(tmp_path):
    _checkpoint(tmp_path, "mine", 3, IDENTITY)
    with pytest.raises(UserError, match=r"run.name 'mine'.*train.epochs: 3 in the checkpoint, 5 now"):
        check_resumable(str(tmp_path), "mine", {**IDENTITY, "train.epochs": 5}, explicit=True)


def test_raised_epochs_under_the_default_name_start_afresh_and_say_so(tmp_path, capsys):
    _checkpoint(tmp_path, "demo-1111111111", 3, IDENTITY)
    check_resumable(str(tmp_path), "demo-2222222222", {**IDENTITY, "train.epochs": 5}, explicit=False)
    out = capsys.readouterr().out
    assert "starting afresh" in out and "demo-1111111111" in out and "train.epochs: 3 in the checkpoint, 5 now" in out


def test_user_errors_inside_workers_become_user_errors_and_bugs_do_not():
    err = WorkerGroupError("rank 1 failed", {1: UserError("data.train: line 3: bad label\nmore")})
    assert str(user_error_of(err)) == "data.train: line 3: bad label"
    cfg_err = WorkerGroupError("x", {0: ConfigError(["train.epochs: must be >= 1"], "train_loop_config")})
    assert "train.epochs" in str(user_error_of(cfg_err))
    assert user_error_of(WorkerGroupError("x", {0: RuntimeError("shape mismatch")})) is None
    assert user_error_of(ValueError("a bug")) is None
