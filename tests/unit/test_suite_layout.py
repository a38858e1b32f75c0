"""The suite's own layout: pytest's default import mode needs unique test-module basenames."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique_across_unit_and_integration():
    # `pytest tests/unit tests/integration` imports each test module by its basename (no
    # __init__.py files); two `test_cli.py` stop collection with "import file mismatch".
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def test_benchmark_scripts_do_not_shadow_installed_packages():
    # `python benchmarks/X.py` puts benchmarks/ first on sys.path: a benchmarks/peft.py made
    # transformers' `from peft import PeftModel` import the script (gpu_suite.sh --dry-run failed).
    from importlib.metadata import packages_distributions

    top_level = set(packages_distributions())
    scripts = {p.stem for p in (TESTS.parent / "benchmarks").glob("*.py")}
    assert sorted(scripts & top_level) == []
