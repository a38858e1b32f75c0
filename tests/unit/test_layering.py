"""Imports point one way: core, data, config, export, serving and the DeepSpeed config never pull in Ray or
DeepSpeed."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import sys
import domainft.config, domainft.core, domainft.data, domainft.engine.ds_config, domainft.planning
import domainft.data.augment
import domainft.serving.app, domainft.serving.predictors, domainft.config.serve
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


def test_import_contracts_hold():
    """pyproject's [tool.importlinter]: cli > distributed | deploy > serving > export, planning, results > engine >
    core > data > config; ray only in distributed, deepspeed only in engine."""
    import shutil

    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    out = subprocess.run([exe], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr


def test_no_import_cycles():
    """No module reaches itself again through its imports (lazy, function-level imports included)."""
    import grimp

    graph = grimp.build_graph("domainft")
    cycles = sorted({tuple(sorted((a, b))) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                     if b != a and not a.startswith(b + ".") and graph.chain_exists(importer=b, imported=a)})
    assert cycles == [], cycles


def test_validate_does_not_import_torch(tmp_path):
    """`domainft validate` answers in a blink: config checks need neither torch nor transformers."""
    corpus, model = tmp_path / "c.jsonl", tmp_path / "m"
    corpus.write_text('{"text": "a", "label": "x"}\n')
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')  # the family is checked from config.json
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output_dir: {tmp_path}/out\ndata: {{train: {corpus}}}\nmodel: {{name_or_path: {model}}}\n")
    code = ("import sys; from domainft.cli import main; rc = main(['validate', sys.argv[1]]);"
            "heavy = [m for m in ('torch', 'transformers', 'ray', 'deepspeed') if m in sys.modules];"
            "print(rc, heavy)")
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr


def test_onnx_runner_imports_no_torch():
    """The serving predictor (export.runtime) needs onnxruntime and tokenizers, not torch."""
    code = "import sys; from domainft.export import OnnxClassifier; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


SRC = ROOT / "src" / "domainft"


def _imports(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_ray_tune_and_ray_serve_each_have_one_home():
    """Every Tune call is in distributed/tune.py (sweeps and audit folds alike), every Serve call in
    distributed/serve.py."""
    homes = {"ray.tune": "distributed/tune.py", "ray.serve": "distributed/serve.py"}
    found = {mod: sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                         if any(i == mod or i.startswith(mod + ".") for i in _imports(p)))
             for mod in homes}
    assert found == {mod: [home] for mod, home in homes.items()}


def test_no_module_but_the_tasks_branches_on_the_task():
    """What differs between kinds of fine-tuning sits behind domainft.tasks: nothing else compares a task."""
    import ast

    def branches(path):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(x, ast.Attribute) and x.attr in ("task", "name") and
                       isinstance(getattr(x, "value", None), (ast.Name, ast.Attribute)) and
                       (x.attr == "task" or getattr(x.value, "attr", getattr(x.value, "id", "")) == "task")
                       for x in sides):
                    yield node.lineno

    found = [f"{p.relative_to(SRC)}:{line}" for p in SRC.rglob("*.py") if "tasks" not in p.parts
             for line in branches(p)]
    assert found == []


def test_prepare_tasks_import_no_model_code():
    """Every Ray Data task and actor of `prepare` imports these modules in a fresh worker process. Before
    the fix they pulled in torch and transformers' model code (about 5 s of CPU per process: a 100-row
    prepare took 15 s, now about 3 s). The tokenizer actor gets the task's `examples` as a plain function
    (pickled by reference to its module), not a method of the task, whose module imports torch."""
    import types

    from domainft.tasks import get_task, task_names

    for name in task_names():
        examples = get_task(name).examples
        assert isinstance(examples, types.FunctionType), name
        assert not examples.__module__.startswith("domainft.tasks"), (name, examples.__module__)
    code = ("import sys; import domainft.distributed.datasets, domainft.distributed.augment, domainft.data.tokenize;"
            "print([m for m in ('torch', 'transformers.modeling_utils', 'deepspeed') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_no_fault_injection_is_read_from_the_environment():
    """Fault injection is the tests' job (distributed.trainer.FAILPOINT, set by monkeypatch): no shipped
    module turns a failure on from an environment variable."""
    import re

    readers = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
               if re.search(r"environ[^\n]*FAIL|getenv\([^)]*FAIL", p.read_text(encoding="utf-8"))]
    assert readers == []
