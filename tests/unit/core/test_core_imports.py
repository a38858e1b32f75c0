"""domainft.core is plain PyTorch: importing and using it never loads Ray or DeepSpeed (nor pyplot)."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    import domainft.core as core
    heavy = lambda: sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "deepspeed"))
    assert heavy() == [], heavy()
    assert "matplotlib" not in sys.modules, "matplotlib is imported lazily"
    assert not any(m.startswith("domainft.config") for m in sys.modules)

    import transformers as T
    model = T.AutoModelForSequenceClassification.from_config(T.BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100))
    lm = core.build_layer_map(model)
    groups = core.build_param_groups(model, lm, lr=1e-3, layer_decay=0.9)
    core.GradientStop(model, lm).set_lowest_trainable(1)
    core.plot_group_lrs([{"step": 0, "lrs": {"head": 1e-3}}], sys.argv[1])
    assert heavy() == [], heavy()
    assert "matplotlib.pyplot" not in sys.modules, "plots must not touch pyplot's global state"
    print("OK")
""")


def test_core_imports_no_ray_or_deepspeed(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "lr.png")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "OK"
