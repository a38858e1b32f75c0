"""Quantities (the kubernetes client's parser) and image references, on small inputs."""
from decimal import Decimal

import pytest

from domainft.deploy.pods import image_problems, parse_quantity, split_image


@pytest.mark.parametrize("text, value", [
    ("500m", Decimal("0.5")), ("2", 2), (2, 2), ("8Gi", 8 * 2**30), ("1e3", 1000), ("1.5", Decimal("1.5")),
    ("64Mi", 64 * 2**20), ("1k", 1000), ("8000m", 8)])
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["8GB", "", "abc", True, None, "1.2.3", "NaN", "5ki"])
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
