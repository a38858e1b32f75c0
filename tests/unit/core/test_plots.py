from domainft.core.plots import plot_group_lrs, plot_learning_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # axes, lines and text, not an empty canvas


def test_learning_curves(tmp_path):
    history = [{"epoch": 1, "train_loss": 1.2, "eval_loss": 1.0, "accuracy": 0.5, "macro_f1": 0.4},
               {"epoch": 2, "train_loss": 0.8, "eval_loss": 0.9, "accuracy": 0.6, "macro_f1": 0.55},
               {"epoch": 3, "train_loss": 0.5, "eval_loss": None, "accuracy": 0.7, "macro_f1": 0.66}]
    out = plot_learning_curves(history, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    _assert_png(out)


def test_group_lrs_log_and_linear(tmp_path):
    trace = [{"step": s, "lrs": {"head": 1e-3 * (s + 1) / 10, "layer_3": 8e-4 * (s + 1) / 10}} for s in range(10)]
    _assert_png(plot_group_lrs(trace, tmp_path / "log.png"))
    frozen = [{"step": s, "lrs": {"head": 1e-3, "layer_2": 0.0 if s < 5 else 5e-4}} for s in range(10)]
    events = [{"step": 5, "depth": 2, "name": "layer_2"}]
    _assert_png(plot_group_lrs(frozen, tmp_path / "events.png", events=events))

