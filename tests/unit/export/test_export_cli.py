"""`domainft export` exit codes: 0 checked, 1 a failed check (numbers printed), 2 a user error (one line)."""
import json

from domainft.cli import main


def _cli(capsys, *args):
    code = main(["export", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_ok_and_user_errors(tiny_distilbert_dir, tmp_path, capsys):
    code, out, err = _cli(capsys, tiny_distilbert_dir, tmp_path / "onnx", "--max-length", 32, "--threads", 1)
    assert code == 0, err
    assert "fp32  max |logit diff|" in out and out.strip().endswith("PASSED")
    report = json.loads((tmp_path / "onnx" / "export_report.json").read_text())
    assert report["passed"] and report["max_length"] == 32

    code, out, err = _cli(capsys, tmp_path / "nope", tmp_path / "o2")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "nope: no such folder" in lines[0]

    bad_check = tmp_path / "c.jsonl"
    bad_check.write_text('{"text": "x", "label": "unheard-of"}\n')
    code, out, err = _cli(capsys, tiny_distilbert_dir, tmp_path / "o3", "--check", bad_check)
    assert code == 2 and "c.jsonl, line 1" in err and len(err.strip().splitlines()) == 1


def test_failed_parity_exits_1_with_numbers(tmp_path, capsys, make_bert_config, save_tiny):
    """Logits of about 1e6: float rounding alone is far above the absolute 1e-4 tolerance."""
    import torch
    import transformers as T

    torch.manual_seed(0)
    model = T.BertForSequenceClassification(make_bert_config())
    with torch.no_grad():
        model.classifier.weight.mul_(1e8)
    src = save_tiny(model, tmp_path / "huge_logits")
    code, out, err = _cli(capsys, src, tmp_path / "onnx", "--max-length", 16, "--threads", 1)
    assert code == 1, out + err
    assert "FAILED: fp32 max |logit diff|" in out and "> 0.0001" in out
    report = json.loads((tmp_path / "onnx" / "export_report.json").read_text())
    assert report["passed"] is False and report["fp32"]["max_abs_diff"] > 1e-4
