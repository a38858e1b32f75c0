"""From a validated config to what a run will do: the RunSpec (`build_spec`), and `domainft plan`'s view of
it (`make_plan`, `format_plan`). Pure: no Ray, no weights (config.json and the prepared data's report)."""
from domainft.planning.build import build_spec, check_model, data_spec, model_problems
from domainft.planning.plan import format_plan, make_plan

__all__ = ["build_spec", "check_model", "data_spec", "format_plan", "make_plan", "model_problems"]
