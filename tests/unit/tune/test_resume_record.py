"""A sweep resumes only with the sweep file and base config it was started with (no Ray started)."""
import pytest

from domainft.config.sweep import load_sweep
from domainft.commands.tune import SWEEP_RECORD, record_or_check
from domainft.errors import UserError


def test_resume_needs_the_recorded_sweep(write_sweep, sweep_raw, tmp_path):
    sweep, base = load_sweep(write_sweep(sweep_raw))
    record_or_check(str(tmp_path / "out"), sweep, base, resuming=False)
    assert (tmp_path / "out" / SWEEP_RECORD).is_file()
    record_or_check(str(tmp_path / "out"), sweep, base, resuming=True)  # same: fine

    capped, _ = load_sweep(write_sweep(sweep_raw), ["max_concurrent_trials=1", "time_budget_s=60"])
    record_or_check(str(tmp_path / "out"), capped, base, resuming=True)  # may change on resume

    other, other_base = load_sweep(write_sweep(sweep_raw), ["num_samples=8", "fixed.optim.lr=1e-3"])
    with pytest.raises(UserError, match=r"other settings \(base_config.optim.lr, sweep.fixed.optim, "
                                        r"sweep.num_samples differ\)"):
        record_or_check(str(tmp_path / "out"), other, other_base, resuming=True)
