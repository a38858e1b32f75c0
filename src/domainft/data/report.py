"""data_report.json: build it, check that the counts add up, print it as a table, fingerprint inputs. No Ray."""
from __future__ import annotations

import hashlib
import json
from typing import Optional

PREPARE_VERSION = 3  # bump when the output of prepare changes for the same inputs (3: the report's pad_token_id)
REQUIRED_KEYS = (
    "rows_read", "rows_kept", "rejected", "duplicates_removed", "empty_removed", "class_counts_before",
    "class_counts_after", "label_map", "train_rows", "eval_rows", "label_names", "max_class_ratio_before",
    "max_class_ratio_after", "fingerprint", "train_dir", "eval_dir", "rejects_path", "seconds",
)


def fingerprint(data: dict, augment: dict, model: dict, seed: int, inputs: list) -> str:
    """Hash of everything prepare's output depends on: config sections, model, seed, input files."""
    blob = json.dumps({"v": PREPARE_VERSION, "data": data, "augment": augment, "model": model, "seed": seed,
                       "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def build_report(*, rows_read: int, rejected: dict, counts: dict, label_names: list[str], blank_lines: int,
                 train_rows: int, eval_rows: int, max_class_ratio: float, balance: str, eval_source: str,
                 paths: dict, fp: str, seconds: float, n_files: int) -> dict:
    """The report dict (see REQUIRED_KEYS), from the collector's and the plan's counts."""
    by_name = (lambda values: {n: int(v) for n, v in zip(label_names, values)})
    ratio = (lambda r: None if r is None else round(float(r), 4))
    missing = [n for n, v in zip(label_names, counts["train_before"]) if v == 0]
    return {
        "rows_read": rows_read, "rows_kept": counts["rows_kept"], "rejected": dict(sorted(rejected.items())),
        "duplicates_removed": counts["duplicates_removed"], "eval_overlap_removed": counts["eval_overlap_removed"],
        "empty_removed": counts["empty_removed"], "blank_lines": blank_lines,
        "class_counts_before": by_name(counts["train_before"]), "class_counts_after": by_name(counts["train_after"]),
        "class_counts_eval": by_name(counts["eval"]), "classes_missing_in_train": missing,
        "max_class_ratio_before": ratio(counts["ratio_before"]), "max_class_ratio_after": ratio(counts["ratio_after"]),
        "balance": {"method": balance, "max_class_ratio": max_class_ratio, "rows_added": counts["rows_added"],
                    "rows_removed": counts["rows_removed"]},
        "label_names": list(label_names), "label_map": {n: i for i, n in enumerate(label_names)},
        "train_rows": train_rows, "eval_rows": eval_rows, "eval_source": eval_source, "input_files": n_files,
        "fingerprint": fp, **paths, "seconds": round(seconds, 3),
    }


def count_problems(report: dict) -> list[str]:
    """Empty when the counts add up: read = kept + rejected + duplicates + empty (+ dropped by label fixes);
    kept = train + eval before balancing."""
    p = []
    lhs = report["rows_read"]
    dropped = (report.get("fixes_applied") or {}).get("dropped", 0)
    rhs = (report["rows_kept"] + sum(report["rejected"].values()) + report["duplicates_removed"]
           + report["empty_removed"] + dropped)
    if lhs != rhs:
        p.append(f"rows_read {lhs} != rows_kept + rejected + duplicates_removed + empty_removed"
                 f"{' + dropped by label fixes' if dropped else ''} = {rhs}")
    fixes = report.get("fixes_applied")
    if fixes and sum(fixes["changes"].values()) != fixes["relabelled"]:
        p.append(f"fixes_applied: relabelled {fixes['relabelled']} != the sum of its changes")
    replay = report.get("replay")
    if replay and sum(replay["by_class"].values()) != replay["rows_added"]:
        p.append(f"replay: rows_added {replay['rows_added']} != the sum of by_class")
    split_sum = sum(report["class_counts_before"].values()) + sum(report["class_counts_eval"].values())
    if split_sum != report["rows_kept"]:
        p.append(f"rows_kept {report['rows_kept']} != train before balancing + eval = {split_sum}")
    return p


def _ratio(r: Optional[float]) -> str:
    return "n/a" if r is None else f"{r:.2f}"


def format_report(r: dict) -> str:
    """The report as a readable table (what `domainft prepare` prints)."""
    rej = sum(r["rejected"].values())
    rej_detail = ", ".join(f"{k} {v}" for k, v in r["rejected"].items())
    b = r["balance"]
    lines = [
        f"prepared data in {r['train_dir'].rsplit('/', 1)[0]}  ({r['seconds']:.1f} s, {r['input_files']} input file(s))",
        f"  {'rows read':<28}{r['rows_read']:>10}",
        f"  {'rejected':<28}{rej:>10}" + (f"   ({rej_detail})" if rej_detail else ""),
        f"  {'duplicates removed':<28}{r['duplicates_removed']:>10}"
        + (f"   (of which {r['eval_overlap_removed']} also in eval)" if r["eval_overlap_removed"] else ""),
        f"  {'empty after cleaning':<28}{r['empty_removed']:>10}",
        f"  {'rows kept':<28}{r['rows_kept']:>10}",
        f"  {'train rows (written)':<28}{r['train_rows']:>10}"
        + ("" if r.get("sft") else f"   ({b['method']}: +{b['rows_added']} -{b['rows_removed']})"),
        f"  {'eval rows (written)':<28}{r['eval_rows']:>10}   ({r['eval_source']})",
    ]
    if not r.get("sft"):
        lines.append(f"  {'max/min class ratio':<28}{_ratio(r['max_class_ratio_before']):>10} -> "
                     f"{_ratio(r['max_class_ratio_after'])}   (limit {b['max_class_ratio']:g}, train split only)")
    if r.get("fixes_applied"):
        fx = r["fixes_applied"]
        lines.append(f"  {'label fixes applied':<28}{fx['relabelled'] + fx['dropped']:>10}   "
                     f"({fx['relabelled']} relabelled, {fx['dropped']} dropped, {fx['unchanged']} confirmed; "
                     f"{fx['file']})")
    if r.get("replay"):
        rp = r["replay"]
        lines.append(f"  {'replayed train rows':<28}{rp['rows_added']:>10}   ({rp['fraction']:g} of "
                     f"{rp['previous_originals']} original rows of {rp['from']}; aug_op \"replay\")")
    if r.get("blank_lines"):
        lines.append(f"  {'blank lines skipped':<28}{r['blank_lines']:>10}   (not records)")
    if r.get("sft"):  # task sft: conversations, no labels
        from domainft.data.sft_report import format_sft_report

        lines += format_sft_report(r)
    else:
        width = max([5] + [len(n) for n in r["label_names"]])
        lines.append(f"  {'label':<{width}} {'id':>4} {'train before':>13} {'train after':>12} {'eval':>8}")
        for i, n in enumerate(r["label_names"]):
            lines.append(f"  {n:<{width}} {i:>4} {r['class_counts_before'][n]:>13} {r['class_counts_after'][n]:>12} "
                         f"{r['class_counts_eval'][n]:>8}")
    if r.get("augmentation") is not None:
        lines.append(f"  augmentation: {json.dumps(r['augmentation'], ensure_ascii=False)[:200]}")
    if r["classes_missing_in_train"]:
        lines.append(f"  warning: no train rows for {', '.join(r['classes_missing_in_train'])}")
    if r["rejects_path"]:
        lines.append(f"  rejects: {r['rejects_path']}")
    return "\n".join(lines)
