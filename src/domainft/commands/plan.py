"""`domainft plan CONFIG`: the RunSpec as a table (groups, peak LRs, the unfreezing timeline, the DeepSpeed
config), per-GPU memory for ZeRO 0-3 and each PEFT regime side by side. No Ray, no weights."""
from __future__ import annotations

import json
from typing import Optional

from domainft.config import Config


def run_plan(cfg: Config, gpus: Optional[int] = None, as_json: bool = False) -> str:
    from domainft.planning import format_plan, make_plan

    plan = make_plan(cfg, num_gpus=gpus)
    return json.dumps(plan, indent=2) if as_json else format_plan(plan)
