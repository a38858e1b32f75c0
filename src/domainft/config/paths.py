"""The one rule for what a configured string names: a URI, a local path, or a hub model name."""
from __future__ import annotations

import os


def is_uri(spec: str) -> bool:
    """`s3://bucket/x`, `gs://...`, `file:///...`: read through pyarrow's filesystems."""
    return "://" in spec


def looks_local(name_or_path: str, check_here: bool = True) -> bool:
    """A model (or other resource) reference is a local path when it starts with / . or ~, or, with
    `check_here`, when its first segment exists on this machine (so `models/minlm`, a typo inside an
    existing folder, is a missing folder rather than a hub name); anything else is a hub name.
    Without `check_here` (a path meant for another machine, e.g. a pod) only the prefix counts."""
    if is_uri(name_or_path):
        return False
    if name_or_path.startswith(("/", ".", "~")):
        return True
    return check_here and os.path.exists(name_or_path.split("/")[0])
