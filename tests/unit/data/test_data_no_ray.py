"""domainft.data is pure: importing every module of it pulls in neither Ray nor DeepSpeed."""
import subprocess
import sys

MODULES = ["balance", "chunks", "clean", "collect", "corpus", "dedupe", "delimited", "labels", "plan", "readers",
           "report", "sources", "split", "term_file", "terms", "tokenize"]


def test_data_modules_import_without_ray():
    code = ("import sys\n" + "".join(f"import domainft.data.{m}\n" for m in MODULES)
            + "bad = [m for m in ('ray', 'deepspeed') if m in sys.modules]\nprint(bad)\nsys.exit(1 if bad else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
