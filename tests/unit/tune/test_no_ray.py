"""The sweep schema and the results code are pure: importing them loads neither Ray nor DeepSpeed."""
import subprocess
import sys


def test_sweep_and_results_import_without_ray():
    code = ("import sys\nimport domainft.config.sweep, domainft.tuning_results\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'deepspeed', 'torch')]\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
