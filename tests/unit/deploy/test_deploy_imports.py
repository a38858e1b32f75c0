"""`domainft k8s-validate` is a check of YAML: it loads neither torch, transformers, Ray nor DeepSpeed."""
import subprocess
import sys
from pathlib import Path

K8S = Path(__file__).resolve().parents[3] / "k8s"

CODE = f"""
import sys
from domainft.cli import main
rc = main(["k8s-validate", {str(K8S)!r}])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "ray", "deepspeed"))
print("heavy:", ",".join(heavy))
sys.exit(rc)
"""


def test_k8s_validate_imports_no_ml_stack():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr  # the whole command ran, with no findings
    assert out.stdout.strip().splitlines()[-1] == "heavy:", out.stdout


def test_deploy_imports_nothing_above_it():
    """deploy sits beside distributed, above config: it never imports the CLI (the CLI passes its parser in)."""
    code = ("import sys, domainft.deploy, domainft.deploy.k8s\n"
            "print(sorted(m for m in sys.modules if m.startswith('domainft.') and m.split('.')[1] not in "
            "('deploy', 'config', 'errors')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
