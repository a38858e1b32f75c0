"""The pieces of the kustomize renderer and the quantity parser, on small inputs."""
from fractions import Fraction

import pytest

from domainft.deploy.jsonpatch import apply_json_patch_op
from domainft.deploy.kustomize import _retag, split_image
from domainft.deploy.pods import image_problems, parse_quantity


@pytest.mark.parametrize("text, value", [
    ("500m", Fraction(1, 2)), ("2", 2), (2, 2), ("8Gi", 8 * 2**30), ("1e3", 1000), ("1.5", Fraction(3, 2)),
    ("64Mi", 64 * 2**20), ("1k", 1000), ("8000m", 8)])
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["8GB", "", "abc", True, "1.2.3"])
def test_bad_quantities(text):
    assert parse_quantity(text) is None


@pytest.mark.parametrize("ref, parts", [
    ("domainft:0.1.0-gpu", ("domainft", "0.1.0-gpu", None)),
    ("reg.io:5000/ml/domainft", ("reg.io:5000/ml/domainft", None, None)),
    ("reg.io:5000/ml/domainft:1@sha256:ab", ("reg.io:5000/ml/domainft", "1", "sha256:ab"))])
def test_split_image(ref, parts):
    assert split_image(ref) == parts


def test_image_rules():
    assert image_problems("rayproject/ray:2.60.0-py311-gpu") is None
    assert image_problems("rayproject/ray@sha256:" + "0" * 64) is None
    assert "latest" in image_problems("rayproject/ray:latest")
    assert "no tag" in image_problems("reg.io:5000/ray")


def test_retag():
    image = {"name": "domainft", "newName": "reg.io/ml/domainft", "newTag": "2"}
    assert _retag("domainft:1", image) == "reg.io/ml/domainft:2"
    assert _retag("other:1", image) == "other:1"
    assert _retag("domainft:1", {"name": "domainft", "digest": "sha256:ab"}) == "domainft@sha256:ab"


def test_json_patch_ops():
    doc = {"spec": {"list": [1, 2], "map": {"a": 1}}}
    assert apply_json_patch_op(doc, {"op": "replace", "path": "/spec/map/a", "value": 2}) is None
    assert apply_json_patch_op(doc, {"op": "add", "path": "/spec/list/-", "value": 3}) is None
    assert apply_json_patch_op(doc, {"op": "remove", "path": "/spec/list/0"}) is None
    assert apply_json_patch_op(doc, {"op": "add", "path": "/spec/a~1b", "value": 1}) is None
    assert apply_json_patch_op(doc, {"op": "copy", "from": "/spec/map", "path": "/spec/copy"}) is None
    assert doc == {"spec": {"list": [2, 3], "map": {"a": 2}, "a/b": 1, "copy": {"a": 2}}}
    assert "does not exist" in apply_json_patch_op(doc, {"op": "replace", "path": "/spec/list/5", "value": 0})
    assert "does not exist" in apply_json_patch_op(doc, {"op": "remove", "path": "/spec/none"})
    assert "does not exist" in apply_json_patch_op(doc, {"op": "replace", "path": "/spec/list/-1", "value": 0})
    assert apply_json_patch_op(doc, {"op": "move", "from": "/spec/copy", "path": "/spec/moved"}) is None
    assert "copy" not in doc["spec"] and doc["spec"]["moved"] == {"a": 2}
    assert "test failed" in apply_json_patch_op(doc, {"op": "test", "path": "/spec/map/a", "value": 1})
    assert "not a JSON 6902 operation" in apply_json_patch_op(doc, {"op": "merge"})
