"""Label maps: explicit order, inferred sorted, numeric labels keep their value as id, persisted."""
from domainft.data.labels import build_label_names, infer_label_names, label_map_dict, read_label_map, write_label_map


def test_inferred_labels_are_sorted():
    assert build_label_names(None, ["tech", "business", "sports", "business"]) == ["business", "sports", "tech"]


def test_explicit_labels_keep_config_order():
    assert build_label_names(["pos", "neg"], ["neg", "pos"]) == ["pos", "neg"]


def test_integer_labels_sort_numerically():
    assert infer_label_names(["10", "2", "0", "1"]) == ["0", "1", "2", "10"]
    assert infer_label_names(["10", "2", "x"]) == ["10", "2", "x"]


def test_chinese_labels_sort_deterministically():
    assert infer_label_names(["正面", "负面"]) == sorted(["正面", "负面"])


def test_label_map_round_trip(tmp_path):
    path = str(tmp_path / "d" / "label_map.json")
    write_label_map(path, ["neg", "pos"])
    assert read_label_map(path) == ["neg", "pos"]
    assert label_map_dict(["neg", "pos"]) == {"label_names": ["neg", "pos"], "label2id": {"neg": 0, "pos": 1}}
