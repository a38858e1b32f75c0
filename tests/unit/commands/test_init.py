"""`domainft init --data FILE`: a starter config whose guesses fit the user's file, which loads as written
and still loads with every suggested setting uncommented."""
import csv
import json
import re

import pytest

from domainft.cli import main
from domainft.config import load_config
from domainft.data.detect import detect_layout
from domainft.errors import UserError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _uncommented(text: str) -> str:
    """The config with every suggested setting (`#   key: value   # why`, `  # key: value`) switched on."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^(#\s{3}|  # |# )(\w+):(.*?)(\s{3}#.*)?$", line)
        if m and not line.startswith("# The") and (m.group(3).strip() or m.group(1) == "# "):
            indent = "  " if m.group(1) != "# " else ""
            out.append(f"{indent}{m.group(2)}:{m.group(3)}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_jsonl_columns_are_guessed_and_the_config_loads_with_every_setting_on(tmp_path, minilm_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _jsonl(tmp_path / "reviews.jsonl", [{"id": i, "review": f"the food was {'good' if i % 2 else 'bad'} " * 5,
                                         "sentiment": "pos" if i % 2 else "neg", "stars": 1.5 + i % 3}
                                        for i in range(50)])
    assert main(["init", "--data", "reviews.jsonl", "--model", str(minilm_path), "--out", "run.yaml"]) == 0
    text = (tmp_path / "run.yaml").read_text()
    cfg = load_config(tmp_path / "run.yaml")
    assert (cfg.data.format, cfg.data.text_column, cfg.data.label_column) == ("jsonl", "review", "sentiment")
    assert cfg.output_dir == str(tmp_path / "runs" / "run") and cfg.model.name_or_path == str(minilm_path)
    assert "# labels in the first 50 rows: neg, pos." in text
    on = tmp_path / "on.yaml"
    on.write_text(_uncommented(text))
    assert on.read_text().count("\n#") < text.count("\n#") - 8  # the ten settings, now set
    assert load_config(on).optim.lr == cfg.optim.lr  # set to their defaults: nothing changes


def test_csv_title_and_body_and_a_chinese_corpus(tmp_path):
    path = tmp_path / "news.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["title", "body", "category"])
        for i in range(30):
            w.writerow([f"headline {i}", "a much longer body of the story, with many words " * 3, ["econ", "law"][i % 2]])
    layout = detect_layout(str(path))
    assert (layout.fmt, layout.text_column, layout.label_column, layout.labels) == ("csv", "body", "category",
                                                                                 ["econ", "law"])
    zh = _jsonl(tmp_path / "zh.jsonl", [{"text": "这家医院的服务很好，医生很专业", "label": "正面"}] * 3)
    assert detect_layout(str(zh)).chinese and not layout.chinese


def test_a_folder_per_label(tmp_path):
    for label in ("sport", "tech"):
        (tmp_path / "corpus" / label).mkdir(parents=True)
        (tmp_path / "corpus" / label / "1.txt").write_text(f"a story about {label}")
    layout = detect_layout(str(tmp_path / "corpus"))
    assert (layout.fmt, layout.labels, layout.files) == ("folders", ["sport", "tech"], 2)


def test_an_existing_file_is_kept_and_nothing_to_read_is_a_user_error(tmp_path, capsys):
    data = _jsonl(tmp_path / "c.jsonl", [{"text": "one two three", "label": "a"}, {"text": "four", "label": "b"}])
    out = tmp_path / "run.yaml"
    out.write_text("mine")
    assert main(["init", "--data", str(data), "--out", str(out)]) == 2
    assert "exists: give another --out, or --force" in capsys.readouterr().err and out.read_text() == "mine"
    assert main(["init", "--data", str(data), "--out", str(out), "--force"]) == 0 and "format: jsonl" in out.read_text()
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="every input file is empty"):
        detect_layout(str(tmp_path / "empty.jsonl"))
    _jsonl(tmp_path / "nums.jsonl", [{"a": 1, "b": 2}] * 3)
    with pytest.raises(UserError, match=r"no column holds text \(columns: a, b\)"):
        detect_layout(str(tmp_path / "nums.jsonl"))


def test_chat_records_get_an_sft_starter_config_that_loads_with_every_setting_on(tmp_path, repo_root, monkeypatch):
    from domainft.tasks import get_task

    monkeypatch.chdir(tmp_path)
    _jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": f"q{i}"},
                                                    {"role": "assistant", "content": f"a{i}"}]} for i in range(20)])
    model = repo_root / "models" / "tiny-deepseek-v3"
    assert main(["init", "--data", "chats.jsonl", "--model", str(model), "--out", "run.yaml"]) == 0
    text = (tmp_path / "run.yaml").read_text()
    cfg = load_config(tmp_path / "run.yaml")
    assert (cfg.task, cfg.data.format, cfg.peft.method) == ("sft", "messages", "lora")
    on = tmp_path / "on.yaml"
    on.write_text(_uncommented(text))
    cfg = load_config(on)
    assert get_task("sft").config_problems(cfg) == [] and cfg.data.packing is False
    from domainft.commands.init import run_init

    with pytest.raises(UserError, match="chat conversations"):
        run_init("chats.jsonl", "other.yaml", task="classification")
