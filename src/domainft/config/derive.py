"""The one way to make a config from another: the A/B arms, audit folds, Tune trials, a sweep's best
config, the distillation student's run and `augment`'s forced setting are each a validated config with
a few dotted keys set, validated exactly as a config file is (every problem at once)."""
from __future__ import annotations

import copy
from typing import Any, Mapping, Union

from domainft.config.load import set_dotted, to_dict, validate_dict
from domainft.config.schema import Config


def derive(base: Union[Config, dict], changes: Mapping[str, Any], source: str) -> Config:
    """`base` with each dotted key of `changes` set, validated.

    Args:
        base: A validated config, or its plain dict (`to_dict`, e.g. after crossing the Ray boundary).
        changes: Dotted key -> value (None restores a key's default where the default is None).
        source: What the config is, for the error (e.g. "A/B augmented", "trial 3f2a").

    Returns:
        The derived Config. Paths are not checked again: they are the base's, which were checked and
        made absolute when it was loaded, and new paths (output folders) are created by the run.

    Raises:
        ConfigError: The changes make an invalid config (every problem, each with its dotted key).
    """
    raw = to_dict(base) if isinstance(base, Config) else copy.deepcopy(base)
    for key, value in changes.items():
        set_dotted(raw, key, value)
    return validate_dict(raw, source=source, check_paths=False)
