"""`domainft validate CONFIG`: the config (every problem at once, at load), its model from config.json (an
architecture domainft cannot train lists the supported ones) and the data's first rows (data/head.py), all
problems in one list. Without a PEFT regime this needs neither torch nor transformers, nor Ray: it answers
in a blink."""
from __future__ import annotations

import sys

from domainft.config import Config, ConfigError, dump_yaml
from domainft.data.head import head_report
from domainft.data.labels import build_label_names
from domainft.families import family_problems
from domainft.tasks import get_task


def run_validate(cfg: Config, source: str = "config") -> str:
    """The resolved config as YAML (what the data check read goes to stderr). Raises ConfigError with the
    model's and the data's problems."""
    if cfg.peft.method == "none":
        problems = family_problems(cfg.model.name_or_path, cfg.model.revision)
    else:  # the family, then target modules and virtual tokens: the model's modules (imports torch)
        from domainft.planning import model_problems

        problems = model_problems(cfg)
    task = get_task(cfg.task)
    problems += task.config_problems(cfg)
    d = cfg.data
    labels = tuple(build_label_names(d.labels, [])) if d.labels is not None else None
    head = head_report(d.train, d.eval, d.file_format, task.parse_options(cfg, labels), d.on_bad_record, d.quoting)
    problems += head.problems
    if problems:
        raise ConfigError(problems, source)
    print(f"# {head.summary()}", file=sys.stderr)
    return dump_yaml(cfg)
