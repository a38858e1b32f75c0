"""Refresh the vendored KubeRay CRD schemas in `crds/` from a KubeRay checkout.

    python -m domainft.deploy.vendor /path/to/kuberay/ray-operator/config/crd/bases

Keeps, per CRD, only what validation needs: group, kind and the `openAPIV3Schema` of each
served, non-deprecated version, unchanged. Update the commit in `crds/NOTICE` when you refresh.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

CRD_FILES = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml", "ray.io_rayservices.yaml")
CRD_DIR = Path(__file__).resolve().parent / "crds"


def strip_crd(crd: dict) -> dict:
    """A CustomResourceDefinition -> {group, kind, versions: {name: openAPIV3Schema}}."""
    versions = {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]
                if v.get("served") and not v.get("deprecated")}
    return {"group": crd["spec"]["group"], "kind": crd["spec"]["names"]["kind"], "versions": versions}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(argv[0])
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for name in CRD_FILES:
        crd = yaml.load((src / name).read_text(encoding="utf-8"), Loader=loader)
        out = CRD_DIR / name.replace(".yaml", ".json")
        # Compact: the schemas are large (no descriptions upstream either) and replaced wholesale on refresh.
        out.write_text(json.dumps(strip_crd(crd), separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
