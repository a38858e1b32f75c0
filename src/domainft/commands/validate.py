"""`domainft validate CONFIG`: the config (every problem at once, at load), then its model from config.json:
an architecture domainft cannot train is a user error listing the supported ones. Without a PEFT regime
this needs neither torch nor transformers, so it answers in a blink."""
from __future__ import annotations

from domainft.config import Config, ConfigError, dump_yaml
from domainft.families import family_problems


def run_validate(cfg: Config, source: str = "config") -> str:
    """The resolved config as YAML. Raises ConfigError with the model's problems."""
    if cfg.peft.method == "none":
        problems = family_problems(cfg.model.name_or_path, cfg.model.revision)
    else:  # the family, then target modules and virtual tokens: the model's modules (imports torch)
        from domainft.planning import model_problems

        problems = model_problems(cfg)
    if problems:
        raise ConfigError(problems, source)
    return dump_yaml(cfg)
