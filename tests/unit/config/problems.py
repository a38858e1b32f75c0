"""`problems(raw)`: the problem list of the ConfigError that validating `raw` must raise."""
import pytest

from domainft.config import ConfigError, validate_dict


def problems(raw):
    with pytest.raises(ConfigError) as e:
        validate_dict(raw)
    return e.value.problems
