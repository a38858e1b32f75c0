"""int8 export: runs, keeps the answers of a model that is sure of them, fails loudly when it cannot."""
import numpy as np

from domainft.export.parity import MAX_ACCURACY_DROP, MIN_AGREEMENT, int8_failures
from domainft.export.pipeline import run_export
from domainft.export.runtime import OnnxClassifier


def test_int8_keeps_answers_on_an_easy_task(easy_bert_dir, easy_check_file, make_easy_texts, tmp_path):
    report = run_export(easy_bert_dir, tmp_path / "onnx", quantize="int8", check=str(easy_check_file), threads=1)
    assert report["passed"], report["failures"]
    check = report["int8"]["check"]
    assert check["rows"] == 90 and report["check"]["accuracy_checked"]
    assert check["accuracy_torch"] >= 0.95  # the fixture model did learn the task
    assert check["argmax_agreement"] >= MIN_AGREEMENT and check["accuracy_drop"] <= MAX_ACCURACY_DROP
    assert report["int8"]["quantized_ops"].get("MatMulInteger", 0) + report["int8"]["quantized_ops"].get(
        "QAttention", 0) > 0
    assert report["int8"]["size_mb"] < report["fp32"]["size_mb"]
    texts, labels = make_easy_texts(12, seed=5)
    assert OnnxClassifier(tmp_path / "onnx", "int8", threads=1).predict(texts) == labels


def test_int8_gates():
    ok = {"argmax_agreement": 0.995, "accuracy_drop": 0.004, "accuracy_torch": 0.97, "accuracy": 0.966}
    assert int8_failures(ok) == []
    assert int8_failures({**ok, "accuracy_drop": None}) == []  # random rows: accuracy not checked
    bad = int8_failures({**ok, "argmax_agreement": 0.89, "accuracy_drop": 0.05, "accuracy": 0.92})
    assert bad == ["int8 argmax agreement 0.8900 < 0.99", "int8 accuracy drop 0.0500 > 0.01 (0.9700 -> 0.9200)"]


def test_runtime_api(exported_bert):
    out, _ = exported_bert
    clf = OnnxClassifier(out, "fp32", batch_size=2, threads=1)
    assert clf.labels == ["neg", "neu", "pos"] and clf.max_length == 128
    texts = ["short", "a somewhat longer text " * 3, "mid length text here", "x " * 400]
    probs = clf.predict_proba(texts)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([clf.logits([t]) for t in texts])
    assert np.abs(clf.logits(texts) - one_by_one).max() <= 1e-5  # batching by length keeps the order
    assert max(len(r) for r in clf.encode(texts)) == 128  # truncated to max_length
    assert len(clf.predict(texts)) == 4 and clf.logits([]).shape == (0, 3)
    assert OnnxClassifier(out, "fp32", max_length=16, threads=1).encode(texts)[3].__len__() == 16
