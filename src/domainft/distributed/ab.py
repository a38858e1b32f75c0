"""`domainft train CONFIG augment.ab=true`: train with and without augmentation on the same split and
seed, and report both side by side (augmentation often gives pretrained transformers no gain)."""
from __future__ import annotations

import json
import os

from domainft.config import Config, apply_overrides, to_dict, validate_dict
from domainft.errors import UserError


def ab_configs(cfg: Config) -> dict[str, Config]:
    raw = to_dict(cfg)
    out = {}
    for arm, enabled in (("baseline", False), ("augmented", True)):
        arm_raw = apply_overrides(raw, [f"augment.enabled={str(enabled).lower()}", "augment.ab=false",
                                        f"output_dir={os.path.join(cfg.output_dir, 'ab', arm)}"])
        out[arm] = validate_dict(arm_raw, source=f"A/B {arm}")
    return out


def run_ab(cfg: Config) -> dict:
    from domainft.distributed.datasets import ensure_prepared
    from domainft.distributed.trainer import init_ray, train_prepared

    init_ray()
    arms = ab_configs(cfg)
    reports = {arm: ensure_prepared(c) for arm, c in arms.items()}
    # Same input, seed and split code: the eval splits must be identical, or the comparison is void.
    if reports["baseline"]["eval_rows"] != reports["augmented"]["eval_rows"]:
        raise UserError("A/B: the two arms got different eval splits; check data.eval / train.seed")
    results = {}
    for arm, c in arms.items():
        print(f"\n=== A/B arm: {arm} ({reports[arm]['train_rows']} train rows) ===", flush=True)
        results[arm] = train_prepared(c, reports[arm])
    table = {arm: {"train_rows": reports[arm]["train_rows"], "eval_rows": reports[arm]["eval_rows"],
                   "accuracy": r["best"]["accuracy"], "macro_f1": r["best"]["macro_f1"],
                   "best_epoch": r["best"]["epoch"]} for arm, r in results.items()}
    delta = {k: table["augmented"][k] - table["baseline"][k] for k in ("accuracy", "macro_f1")}
    out = {"arms": table, "delta_augmented_minus_baseline": delta,
           "augmentation": reports["augmented"].get("augmentation")}
    os.makedirs(cfg.output_dir, exist_ok=True)
    with open(os.path.join(cfg.output_dir, "ab_report.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(format_ab(out))
    return out


def format_ab(out: dict) -> str:
    lines = ["", "arm         train_rows  eval_rows  accuracy  macro_f1  best_epoch"]
    for arm, r in out["arms"].items():
        lines.append(f"{arm:<11} {r['train_rows']:>10} {r['eval_rows']:>10} {r['accuracy']:>9.4f} "
                     f"{r['macro_f1']:>9.4f} {r['best_epoch']:>11}")
    d = out["delta_augmented_minus_baseline"]
    lines.append(f"augmented - baseline: accuracy {d['accuracy']:+.4f}, macro-F1 {d['macro_f1']:+.4f}")
    return "\n".join(lines)
