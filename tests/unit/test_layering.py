"""Imports point one way: core, data, config, export and the DeepSpeed config never pull in Ray or DeepSpeed."""
import subprocess
import sys

CODE = """
import sys
import domainft.config, domainft.core, domainft.data, domainft.engine.ds_config, domainft.planning
import domainft.data.augment
import domainft.export.pipeline, domainft.export.runtime
bad = sorted(m for m in ("ray", "deepspeed") if m in sys.modules)
print(",".join(bad))
"""


def test_core_layers_import_neither_ray_nor_deepspeed():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_config_imports_nothing_else_from_domainft():
    code = "import sys, domainft.config; print(sorted(m for m in sys.modules if m.startswith('domainft.') " \
           "and not m.startswith('domainft.config')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_onnx_runner_imports_no_torch():
    """The serving predictor (export.runtime) needs onnxruntime and tokenizers, not torch."""
    code = "import sys; from domainft.export import OnnxClassifier; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
