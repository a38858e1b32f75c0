"""The export of a classifier folder to a checked ONNX Runtime folder (fp32, optionally int8), in phases.

MODEL_DIR -> export (TorchScript, dynamic axes) -> transformer fusions -> fp32 parity at several
shapes (the fused graph, else the plain one) -> OUT_DIR/model.onnx -> optional dynamic int8 ->
agreement / accuracy vs PyTorch on check data -> export_report.json. The report is written
whether the checks pass or not; `passed` and `failures` say which.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from domainft.errors import UserError
from domainft.export.checkdata import load_check_data
from domainft.export.machine import cpu_info, latencies
from domainft.export.onnx_export import OPSET, export_onnx, input_names_for
from domainft.export.optimize import optimize_onnx
from domainft.export.parity import (FP32_TOLERANCE, compare, fp32_parity, int8_failures, random_rows,
                                    torch_runner)
from domainft.export.quantize import Int8Settings, quantize_int8
from domainft.export.runtime import (META_KEY, VARIANTS, OnnxClassifier, batched_logits, graph_runner, open_session,
                                     trained_inputs, warn_longer_than_trained)
from domainft.export.source import Classifier, load_classifier
from domainft.families import position_limit

REPORT = "export_report.json"
OUTPUTS = (*VARIANTS.values(), REPORT)
RANDOM_CHECK_ROWS = 256


def resolve_max_length(clf: Classifier, requested: Optional[int]) -> int:
    """The longest input the export (or the torch server) takes: --max-length, else the data.max_length the
    model was trained at (recorded in its config.json by `domainft train`), else the tokenizer's limit;
    capped at the model's position table (and 512 when nothing says). An explicit length past the training
    length is taken, with a warning."""
    limit = position_limit(clf.model.config)
    trained = trained_inputs(clf.config, clf.model_dir / "config.json").max_length
    if requested is not None:
        if requested < 2:
            raise UserError(f"--max-length must be at least 2, got {requested}")
        if limit and requested > limit:
            raise UserError(f"--max-length {requested} exceeds the model's {limit} positions "
                            f"({clf.model_dir / 'config.json'}: max_position_embeddings)")
        if trained and requested > trained:
            warn_longer_than_trained(requested, trained)
        return requested
    if trained:
        return min(trained, limit) if limit else trained
    tok = getattr(clf.tokenizer, "model_max_length", None)
    candidates = [x for x in (tok if tok and tok < 100_000 else None, limit) if x]
    return int(min(candidates)) if candidates else 512


def _write_folder(clf: Classifier, out_dir: Path, max_length: int, input_names: list[str]) -> None:
    clf.tokenizer.save_pretrained(out_dir)
    config = dict(clf.config)  # as read: id2label and domainft's record of the training inputs come along
    config[META_KEY] = {"max_length": max_length, "inputs": input_names, "outputs": ["logits"], "opset": OPSET,
                        "pad_token_id": clf.tokenizer.pad_token_id or 0, "variants": {}}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _set_variants(out_dir: Path, variants: list[str]) -> None:
    path = out_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config[META_KEY]["variants"] = {v: VARIANTS[v] for v in variants}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _worst(parity: list[dict]) -> float:
    return max(p["max_abs_diff"] for p in parity)


def _export_fp32(clf: Classifier, input_names: list[str], dst: Path, max_length: int, exporter: str,
                 threads: Optional[int], report: dict) -> list[dict]:
    """Export, fuse, check; write the graph that passes (fused preferred) to dst. Returns its parity."""
    cfg = clf.model.config
    shape = dict(input_names=input_names, max_length=max_length, vocab_size=cfg.vocab_size,
                 pad_id=clf.tokenizer.pad_token_id or 0, type_vocab_size=getattr(cfg, "type_vocab_size", 0) or 0)
    reference = torch_runner(clf.model)
    with tempfile.TemporaryDirectory(prefix="domainft-export-") as tmp:
        raw, fused = Path(tmp) / "raw.onnx", Path(tmp) / "fused.onnx"
        t0 = time.perf_counter()
        export_onnx(clf.model, input_names, raw, cfg.vocab_size, exporter=exporter)
        t1 = time.perf_counter()
        report["optimizer"] = optimize_onnx(raw, fused, cfg.model_type, getattr(cfg, "num_attention_heads", 0) or 0,
                                            getattr(cfg, "hidden_size", 0) or 0)
        t2 = time.perf_counter()
        parity = fp32_parity(reference, graph_runner(open_session(fused, threads)), **shape)
        chosen = fused
        if _worst(parity) > FP32_TOLERANCE:
            plain = fp32_parity(reference, graph_runner(open_session(raw, threads)), **shape)
            if _worst(plain) <= _worst(parity):
                report["optimizer"]["note"] = (f"the fused graph missed fp32 parity (max diff {_worst(parity):.2e}); "
                                               f"kept the unfused graph")
                report["optimizer"]["fusions"] = {}
                parity, chosen = plain, raw
        shutil.move(str(chosen), dst)
        report["timings_s"].update(export=t1 - t0, optimize=t2 - t1, fp32_parity=time.perf_counter() - t2)
    return parity


def _latencies(runners: dict, max_length: int, vocab_size: int) -> dict:
    """p50/p99 at batch 1, sequence min(128, max_length): a quick look; benchmarks/inference.py measures."""
    seq = min(128, max_length)
    ids = np.random.default_rng(7).integers(min(5, vocab_size - 1), vocab_size, (1, seq))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    timed = latencies({name: (lambda i, run=run: run(feed)) for name, run in runners.items()}, repeats=10, warmup=2)
    return {"batch": 1, "seq": seq, **timed}


@dataclass
class ExportJob:
    """One export as it goes through the phases: the classifier, where it goes, the check rows, the report."""

    clf: Classifier
    out_dir: Path
    max_length: int
    input_names: list[str]
    threads: Optional[int]
    report: dict
    rows: list = field(default_factory=list)  # token id rows the variants are checked on
    labels: Optional[list] = None  # their labels (None: random rows, accuracy not checked)
    reference: Optional[np.ndarray] = None  # PyTorch's logits on `rows`
    runners: dict = field(default_factory=dict)  # name -> one-batch runner, for the latency table
    variants: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_export(model_dir, out_dir, quantize: Optional[str] = None, check: Optional[str] = None,
               max_length: Optional[int] = None, trust_remote_code: bool = False, exporter: str = "torchscript",
               int8: Int8Settings = Int8Settings(), threads: Optional[int] = None) -> dict:
    """Export a fine-tuned classifier folder to ONNX Runtime and check it.

    Args:
        model_dir: A Hugging Face classifier folder (config.json with id2label, model.safetensors,
            tokenizer), e.g. `<output_dir>/best`.
        out_dir: Where model.onnx (and model.int8.onnx), the tokenizer, config.json and
            export_report.json go (created; earlier outputs there are replaced).
        quantize: None or "int8".
        check: Labelled texts for the int8 (and fp32) agreement and accuracy: a corpus file or a
            prepared split folder. None: int8 agreement on random token rows, accuracy unchecked.
        max_length: Longest input served (default: the data.max_length the model was trained at, recorded in
            its config.json; else the tokenizer's / model's limit). The training record (length, truncation
            side) is carried into OUT_DIR/config.json.
        trust_remote_code: Allow model code shipped with the checkpoint.
        exporter: "torchscript" or "dynamo".
        int8: Quantisation settings.
        threads: ONNX Runtime intra-op threads (torch gets the same for the checks).

    Returns:
        The report (also written to out_dir/export_report.json); `passed` False lists `failures`.

    Raises:
        UserError: A bad model folder, check data or option.
    """
    t_start = time.perf_counter()
    job, data = setup(model_dir, out_dir, quantize, check, max_length, trust_remote_code, exporter, threads)
    export_fp32(job, exporter)
    check_fp32(job, data)
    if quantize == "int8":
        quantize_and_check(job, int8, gated=data is not None)
    _set_variants(job.out_dir, job.variants)
    return finish(job, t_start)


def setup(model_dir, out_dir, quantize: Optional[str], check: Optional[str], max_length: Optional[int],
          trust_remote_code: bool, exporter: str, threads: Optional[int]):
    """Every input checked before any export work (the folder, the length, the check data); earlier outputs
    removed. Returns (the job, the check data or None)."""
    import onnx
    import onnxruntime

    if quantize not in (None, "int8"):
        raise UserError(f"--quantize must be int8, got {quantize!r}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise UserError(f"{out_dir}: OUT_DIR must differ from MODEL_DIR (config.json would be overwritten)")
    if threads:
        torch.set_num_threads(threads)
    clf = load_classifier(model_dir, trust_remote_code)
    length = resolve_max_length(clf, max_length)
    data = load_check_data(check, clf.labels) if check else None  # bad check data fails before any export work
    input_names = input_names_for(clf.model, clf.tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # no stale int8 graph or report survives a new export
        (out_dir / name).unlink(missing_ok=True)
    report: dict = {
        "model_dir": str(model_dir), "model_type": clf.model.config.model_type, "labels": clf.labels,
        "parameters": sum(p.numel() for p in clf.model.parameters()), "max_length": length,
        "trained_max_length": trained_inputs(clf.config, model_dir / "config.json").max_length,
        "inputs": input_names, "exporter": exporter, "opset": OPSET,
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "torch": torch.__version__},
        "cpu": cpu_info(), "threads": threads or torch.get_num_threads(), "timings_s": {},
    }
    return ExportJob(clf, out_dir, length, input_names, threads, report), data


def export_fp32(job: ExportJob, exporter: str) -> None:
    """model.onnx (the fused graph when it keeps fp32 parity) and the folder around it."""
    parity = _export_fp32(job.clf, job.input_names, job.out_dir / VARIANTS["fp32"], job.max_length, exporter,
                          job.threads, job.report)
    _write_folder(job.clf, job.out_dir, job.max_length, job.input_names)
    job.variants.append("fp32")
    worst = _worst(parity)
    job.failures += [f"fp32 max |logit diff| {worst:.3g} > {FP32_TOLERANCE} at batch {p['batch']}, seq {p['seq']}"
                     for p in parity if p["max_abs_diff"] == worst and p["max_abs_diff"] > FP32_TOLERANCE][:1]
    job.report["fp32"] = {"file": VARIANTS["fp32"], "shapes_checked": parity, "max_abs_diff": worst,
                          "tolerance": FP32_TOLERANCE}


def check_fp32(job: ExportJob, data) -> None:
    """The rows every variant is checked on (the check data, else random token rows), PyTorch's logits on
    them, and model.onnx's agreement with them."""
    clf, report = job.clf, job.report
    reference = torch_runner(clf.model)
    fp32 = OnnxClassifier(job.out_dir, "fp32", max_length=job.max_length, threads=job.threads)
    job.runners = {"torch": reference, "fp32": fp32.run}
    if data is not None:
        job.rows, job.labels = fp32.encode(data.texts), data.labels
        report["check"] = {"source": data.source, "rows": len(job.rows), "accuracy_checked": True}
    else:
        job.rows = random_rows(RANDOM_CHECK_ROWS, job.max_length, clf.model.config.vocab_size)
        report["check"] = {"source": f"{RANDOM_CHECK_ROWS} random token rows", "rows": len(job.rows),
                           "accuracy_checked": False,
                           "note": "no --check data: int8 agreement measured on random tokens and reported, not "
                                   "gated (random tokens sit near decision boundaries: a fine-tuned MiniLM agreeing "
                                   "1.000 on held-out texts agreed 0.961 on them); accuracy not checked"}
    t0 = time.perf_counter()
    job.reference = batched_logits(reference, job.rows, clf.tokenizer.pad_token_id or 0, len(clf.labels))
    report["fp32"]["check"] = compare(job.reference, fp32.logits_from_ids(job.rows), job.labels)
    report["timings_s"]["fp32_check"] = time.perf_counter() - t0


def quantize_and_check(job: ExportJob, int8: Int8Settings, gated: bool) -> None:
    """model.int8.onnx (dynamic int8) and its agreement and accuracy against PyTorch: gated only on
    labelled check data."""
    report = job.report
    t0 = time.perf_counter()
    report["int8"] = {"file": VARIANTS["int8"], **quantize_int8(job.out_dir / VARIANTS["fp32"],
                                                               job.out_dir / VARIANTS["int8"], int8)}
    report["timings_s"]["quantize"] = time.perf_counter() - t0
    job.variants.append("int8")
    _set_variants(job.out_dir, job.variants)
    q = OnnxClassifier(job.out_dir, "int8", max_length=job.max_length, threads=job.threads)
    t0 = time.perf_counter()
    report["int8"]["check"] = compare(job.reference, q.logits_from_ids(job.rows), job.labels)
    report["timings_s"]["int8_check"] = time.perf_counter() - t0
    if gated:
        job.failures += int8_failures(report["int8"]["check"])
    report["int8"]["gated"] = gated
    job.runners["int8"] = q.run


def finish(job: ExportJob, t_start: float) -> dict:
    """Sizes, a quick latency table, PASSED / FAILED, export_report.json."""
    report = job.report
    for name in job.variants:
        report[name]["size_mb"] = (job.out_dir / VARIANTS[name]).stat().st_size / 1e6
    report["latency"] = _latencies(job.runners, job.max_length, job.clf.model.config.vocab_size)
    report["timings_s"]["total"] = time.perf_counter() - t_start
    report["passed"], report["failures"] = not job.failures, job.failures
    (job.out_dir / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def format_summary(report: dict) -> str:
    """A few lines for the terminal: parity, agreement, accuracy, latency, and PASSED / FAILED."""
    fp32 = report["fp32"]
    shapes = ", ".join(f"{s['batch']}x{s['seq']}" for s in fp32["shapes_checked"])
    fusions = ", ".join(f"{k} {v}" for k, v in report["optimizer"]["fusions"].items()) or "none"
    lines = [f"fp32  max |logit diff| {fp32['max_abs_diff']:.2e} (<= {fp32['tolerance']:g}) at batch x seq {shapes}",
             f"      fusions: {fusions}" + (f" ({report['optimizer']['note']})" if report["optimizer"]["note"] else "")]
    check = report["check"]
    lines.append(f"check {check['source']}: {check['rows']} rows"
                 + ("" if check["accuracy_checked"] else " (accuracy not checked)"))
    for name in ("fp32", "int8"):
        if name not in report:
            continue
        c = report[name]["check"]
        acc = (f", accuracy {c['accuracy']:.4f} (torch {c['accuracy_torch']:.4f}, drop {c['accuracy_drop']:+.4f})"
               if c["accuracy"] is not None else "")
        lines.append(f"{name:5} argmax agreement {c['argmax_agreement']:.4f}{acc}, {report[name]['size_mb']:.1f} MB")
    lat = report["latency"]
    lines.append(f"latency p50 at batch {lat['batch']}, seq {lat['seq']}: "
                 + ", ".join(f"{k} {v['p50_ms']:.1f} ms" for k, v in lat.items() if isinstance(v, dict)))
    if "int8" in report and not report["int8"]["gated"]:
        lines.append("int8  not checked against labelled data (random tokens only): pass --check DATA for the "
                     "agreement >= 0.99 / accuracy drop <= 0.01 gate")
    lines.append("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"]))
    return "\n".join(lines)
