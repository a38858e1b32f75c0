"""fp32 export parity at several shapes, for a model with segment ids (BERT) and one without (DistilBERT)."""
import json

import numpy as np
import onnx
import onnxruntime
import pytest

from domainft.export.machine import cpu_info
from domainft.export.onnx_export import export_onnx, input_names_for
from domainft.export.parity import FP32_TOLERANCE, fp32_parity, parity_lengths, random_feed, torch_runner
from domainft.export.pipeline import run_export
from domainft.export.runtime import graph_runner, open_session
from domainft.export.source import load_classifier


def test_bert_export_folder_and_parity(exported_bert):
    out, report = exported_bert
    assert report["passed"], report["failures"]
    assert {"model.onnx", "model.int8.onnx", "export_report.json", "config.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    shapes = {(s["batch"], s["seq"]) for s in report["fp32"]["shapes_checked"]}
    assert shapes == {(b, s) for b in (1, 8) for s in parity_lengths(128)}
    assert len({s for _, s in shapes}) >= 3
    assert report["fp32"]["max_abs_diff"] <= FP32_TOLERANCE
    assert report["optimizer"]["fusions"].get("Attention") == 2  # the fused graph is the one shipped
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    assert config["onnx_export"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert config["onnx_export"]["variants"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["versions"]["onnxruntime"] == onnxruntime.__version__
    # this machine's CPU as /proc/cpuinfo says (every known flag is a key: the values are the check)
    assert on_disk["cpu"] == cpu_info() and any(on_disk["cpu"]["flags"].values())
    assert on_disk["check"]["accuracy_checked"] is False and on_disk["int8"]["gated"] is False


def test_graph_axes_are_dynamic(exported_bert):
    out, _ = exported_bert
    graph = onnx.load(str(out / "model.onnx")).graph
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"], inp.name
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_distilbert_has_no_segment_input_and_matches(tiny_distilbert_dir, tmp_path):
    report = run_export(tiny_distilbert_dir, tmp_path / "onnx", threads=1)
    assert report["passed"], report["failures"]
    assert report["inputs"] == ["input_ids", "attention_mask"]
    assert report["fp32"]["max_abs_diff"] <= FP32_TOLERANCE
    assert len(report["fp32"]["shapes_checked"]) == 2 * len(parity_lengths(report["max_length"]))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_exporters_keep_dynamic_shapes(tiny_bert_dir, tmp_path, exporter):
    """Both exporters, unoptimised: exported at [2, 16], run at other batches and lengths."""
    clf = load_classifier(tiny_bert_dir)
    names = input_names_for(clf.model, clf.tokenizer)
    path = export_onnx(clf.model, names, tmp_path / "m.onnx", clf.model.config.vocab_size, exporter=exporter)
    parity = fp32_parity(torch_runner(clf.model), graph_runner(open_session(path, 1)), names, 64,
                         clf.model.config.vocab_size, 0, 2)
    assert max(p["max_abs_diff"] for p in parity) <= FP32_TOLERANCE, parity


def test_inputs_are_bound_by_name(tiny_bert_dir, exported_bert):
    """The graph's attention_mask input is the mask and token_type_ids the segments: the export
    matches PyTorch on inputs where swapping the two would change the logits a lot."""
    out, _ = exported_bert
    clf = load_classifier(tiny_bert_dir)
    feed = random_feed(["input_ids", "attention_mask", "token_type_ids"], 8, 24, 30522, 0, 2, seed=3)
    torch_logits = torch_runner(clf.model)
    swapped = dict(feed, attention_mask=feed["token_type_ids"], token_type_ids=feed["attention_mask"])
    assert np.abs(torch_logits(feed) - torch_logits(swapped)).max() > 1e-2  # the test can see a swap
    onnx_logits = graph_runner(open_session(out / "model.onnx", 1))
    # the tokenizer's key order (input_ids, token_type_ids, attention_mask) must not matter
    tokenizer_order = {k: feed[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    assert np.abs(onnx_logits(tokenizer_order) - torch_logits(feed)).max() <= FP32_TOLERANCE
