"""Augmentation throughput: domainft's synonym replacement and EDA on 40k (>= 20k) BBC sentences.

Measures, in one run, on the same input:
- one process, no Ray (the per-core rate of the pure batch function);
- Ray Data with `ray.init(num_cpus=1)`, then `num_cpus=2` (end to end: token stage,
  driver-side de-duplication, filter), after a warm-up that loads WordNet in every worker;
- nlpaug, when installed: `SynonymAug(aug_src="wordnet")` (needs NLTK's POS tagger, which is
  not available offline: the error is reported) and `RandomWordAug` swap/delete, which need no
  data; for each, the share of outputs in which a protected term (number, unit, code) changed.

Prints one JSON object (and writes it with --out). Usage:
    .venv/bin/python benchmarks/augment.py [--sentences 40000] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from domainft.data.augment import AugmentSettings, augment_batch, build_matcher  # noqa: E402

CONFIGS = {
    "synonym": dict(n_aug=1, synonym=0.1, swap=0.0, delete=0.0, insert=0.0),
    "eda": dict(n_aug=1, synonym=0.0, swap=0.05, delete=0.05, insert=0.05),
}
BATCH = 128


def bbc_sentences(n: int) -> list[str]:
    out: list[str] = []
    for label_dir in sorted((ROOT / "data" / "bbc").iterdir()):
        for f in sorted(label_dir.glob("*.txt")):
            for line in f.read_bytes().decode("utf-8", errors="replace").splitlines():
                out += [s for s in re.split(r"(?<=[.!?])\s+", line.strip()) if len(s.split()) >= 4]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} sentences in data/bbc; run `make resources`")
    return out[:n]


def pure_rate(sentences: list[str], settings: AugmentSettings) -> dict:
    t0 = time.perf_counter()
    augment_batch({"text": sentences[:BATCH]}, settings)  # loads WordNet (cached table) once
    load_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    produced = 0
    for start in range(0, len(sentences), BATCH):
        out = augment_batch({"text": sentences[start:start + BATCH]}, settings)
        produced += sum(1 for a, d in zip(out["is_augmented"], out["_drop"]) if a and not d)
    return {**_rates(len(sentences), time.perf_counter() - t0, time.process_time() - c0),
            "augmented_rows": produced, "first_batch_with_loading_s": round(load_s, 2)}


def _rates(rows: int, wall: float, cpu: float) -> dict:
    """Wall-clock rate, and the rate per CPU-second of this process (steadier on a shared machine)."""
    return {"rows": rows, "seconds": round(wall, 2), "rows_per_s": round(rows / wall, 1),
            "cpu_seconds": round(cpu, 2), "rows_per_cpu_s": round(rows / cpu, 1)}


def ray_rates(sentences: list[str], cpus: int) -> dict:
    import ray

    from domainft.distributed.augment import augment_dataset

    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=512 * 1024**2, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        results = {}
        items = [{"text": t, "label": i % 5, "source_id": f"s{i}", "aug_op": "", "is_augmented": False}
                 for i, t in enumerate(sentences)]
        for name, kw in CONFIGS.items():
            settings = AugmentSettings(**kw)
            warm = ray.data.from_items(items[:64 * cpus * 2], override_num_blocks=cpus * 2)
            augment_dataset(warm, settings, token_batch_rows=32)[0].count()  # every worker loads WordNet
            t0 = time.perf_counter()
            ds = ray.data.from_items(items, override_num_blocks=max(8, 8 * cpus))
            out, report = augment_dataset(ds, settings, token_batch_rows=BATCH)
            n_out = out.count()
            s = time.perf_counter() - t0
            timing = report["timing"]
            cpu = timing["worker_cpu_s"]
            results[name] = {"rows": len(sentences), "seconds": round(s, 2), "rows_per_s": round(len(sentences) / s, 1),
                             "augment_stages_s": timing["augment_stages_s"], "dedupe_s": timing["dedupe_s"],
                             "stage_rows_per_s": round(len(sentences) / timing["augment_stages_s"], 1),
                             "worker_cpu_s": cpu, "rows_per_worker_cpu_s": round(len(sentences) / cpu, 1) if cpu else None,
                             "rows_out": n_out, "augmented": report["augmented"],
                             "dropped": {k: v for k, v in report["dropped"].items() if v},
                             "load_avg_1m": round(os.getloadavg()[0], 2)}
        return results
    finally:
        ray.shutdown()


def protected_changed_share(matcher, originals: list[str], outputs: list[str]) -> float:
    changed = sum(1 for a, b in zip(originals, outputs) if matcher.terms_in(a) != matcher.terms_in(b))
    return round(changed / max(1, len(originals)), 4)


def nlpaug_rates(sentences: list[str]) -> dict:
    try:
        import nlpaug
        import nlpaug.augmenter.word as naw
    except ImportError:
        return {"installed": False, "note": "nlpaug is not installed (optional: `.venv/bin/pip install nlpaug`)"}
    from domainft.data.augment.wordnet_setup import ensure_wordnet_on_path

    ensure_wordnet_on_path()
    res: dict = {"installed": True, "version": nlpaug.__version__}
    matcher = build_matcher(())
    # Only texts with something to protect, for the damage measure.
    with_codes = [s for s in sentences if matcher.spans(s)][:2000]
    try:
        aug = naw.SynonymAug(aug_src="wordnet", aug_p=0.1)
        t0, c0 = time.perf_counter(), time.process_time()
        outs = [aug.augment(s)[0] for s in sentences]
        res["SynonymAug"] = _rates(len(sentences), time.perf_counter() - t0, time.process_time() - c0)
        del outs
    except Exception as e:  # LookupError: averaged_perceptron_tagger_eng is not available offline
        first = next((line.strip() for line in str(e).splitlines() if "not found" in line), str(e)[:200])
        res["SynonymAug"] = {"ran": False, "error": f"{type(e).__name__}: {first}",
                             "why": "SynonymAug POS-tags every text with nltk.pos_tag, whose "
                                    "averaged_perceptron_tagger_eng data cannot be downloaded here"}
    for action in ("swap", "delete"):
        aug = naw.RandomWordAug(action=action, aug_p=0.05)
        t0, c0 = time.perf_counter(), time.process_time()
        outs = [aug.augment(s)[0] for s in sentences]
        rates = _rates(len(sentences), time.perf_counter() - t0, time.process_time() - c0)
        damaged = protected_changed_share(matcher, with_codes, [aug.augment(t)[0] for t in with_codes])
        res[f"RandomWordAug_{action}"] = {**rates, "share_with_protected_term_changed": damaged}
        del outs
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=40000, help="BBC sentences (>= 20k; the corpus has 41,667)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    sentences = bbc_sentences(args.sentences)
    result: dict = {"benchmark": "augment", "sentences": len(sentences), "source": "data/bbc (BBC News sentences)",
                    "machine": {"python": platform.python_version(), "cpus_visible": os.cpu_count(),
                                "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
                    "configs": CONFIGS}
    result["one_process_no_ray"] = {name: pure_rate(sentences, AugmentSettings(**kw)) for name, kw in CONFIGS.items()}
    matcher = build_matcher(())
    with_codes = [s for s in sentences if matcher.spans(s)][:2000]
    ours = augment_batch({"text": with_codes}, AugmentSettings(**CONFIGS["eda"]))
    # Outputs domainft emits (a copy whose protected terms moved is dropped by the guard, never emitted).
    src = {sid: t for sid, t, c in zip(ours["source_id"], ours["text"], ours["_copy"]) if c == -1}
    pairs = [(src[sid], t) for sid, t, c, d in zip(ours["source_id"], ours["text"], ours["_copy"], ours["_drop"])
             if c == 0 and d not in ("protected_term_changed", "protected_term_added")]
    result["one_process_no_ray"]["eda"]["share_with_protected_term_changed"] = protected_changed_share(
        matcher, [a for a, _ in pairs], [b for _, b in pairs])
    result["ray_data"] = {f"num_cpus_{n}": ray_rates(sentences, n) for n in (1, 2)}
    for name in CONFIGS:
        one, two = result["ray_data"]["num_cpus_1"][name], result["ray_data"]["num_cpus_2"][name]
        result["ray_data"].setdefault("speedup_2_vs_1", {})[name] = {
            "end_to_end": round(two["rows_per_s"] / one["rows_per_s"], 2),
            "augment_stages": round(two["stage_rows_per_s"] / one["stage_rows_per_s"], 2)}
    result["notes"] = [
        "rows_per_cpu_s (one process) and rows_per_worker_cpu_s (Ray) divide by CPU time actually used, which "
        "stays meaningful when other jobs share the cores; the load averages say how busy the machine was.",
        "end_to_end includes the driver-side de-duplication pass (serial); augment_stages is the parallel part.",
    ]
    result["nlpaug"] = nlpaug_rates(sentences)
    result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
