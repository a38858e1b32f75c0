"""`domainft train CONFIG augment.ab=true`: both arms on the same split and seed, side by side."""
import json
import os

import pytest

from run_configs import run_config
from domainft.commands.train import run_ab


@pytest.fixture
def small_bbc(tmp_path, bbc_dir):
    rows = []
    for label in ("business", "sports", "tech"):
        folder = bbc_dir / label
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.txt"))[:60]:
            text = f.read_text(encoding="utf-8", errors="replace")[:400]
            rows.append(json.dumps({"text": text, "label": label}))
    path = tmp_path / "bbc_small.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.timeout(900)
def test_ab_trains_both_arms_on_the_same_split(ray_cluster, tmp_path, small_bbc, tiny_model_dir, capsys):
    cfg = run_config(tmp_path / "ab", small_bbc, tiny_model_dir, data={"eval_fraction": 0.2},
                     optim={"lr": 1e-3}, scaling={"num_workers": 1},
                     augment={"enabled": True, "ab": True, "n_aug": 1, "ops": {"synonym": 0.2, "swap": 0.1,
                                                                               "delete": 0.1, "insert": 0.1,
                                                                               "backtranslate": 0.0}})
    out = run_ab(cfg)
    arms = out["arms"]
    assert set(arms) == {"baseline", "augmented"}
    assert arms["baseline"]["eval_rows"] == arms["augmented"]["eval_rows"] > 0
    assert arms["augmented"]["train_rows"] > arms["baseline"]["train_rows"]
    assert out["augmentation"]["rows_out"] == arms["augmented"]["train_rows"]
    saved = json.loads(open(os.path.join(cfg.output_dir, "ab_report.json")).read())
    assert saved["delta_augmented_minus_baseline"]["macro_f1"] == pytest.approx(
        arms["augmented"]["macro_f1"] - arms["baseline"]["macro_f1"])
    # the eval splits are the same rows, not just the same count
    import pyarrow.parquet as pq

    evals = [sorted(pq.read_table(os.path.join(cfg.output_dir, "ab", arm, "data", "eval")).column("source_id")
                    .to_pylist()) for arm in ("baseline", "augmented")]
    assert evals[0] == evals[1]
    assert "augmented - baseline" in capsys.readouterr().out
