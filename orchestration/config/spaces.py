"""Search spaces from sweep files, as Optuna distributions.

    space:
      lr: [1.0e-4, 1.0e-2, log]      # float range, log scale
      dropout: [0.0, 0.5]            # float range
      hidden: {choices: [128, 256]}  # categorical
      epochs: {int: [5, 30]}         # integer range
"""
from __future__ import annotations

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution


def parse_space(space: dict) -> dict:
    if not isinstance(space, dict) or not space:
        raise ValueError("space must be a non-empty mapping of parameter -> range")
    distributions = {}
    for name, spec in space.items():
        if isinstance(spec, dict) and "choices" in spec:
            distributions[name] = CategoricalDistribution(list(spec["choices"]))
        elif isinstance(spec, dict) and "int" in spec:
            low, high = spec["int"][:2]
            distributions[name] = IntDistribution(int(low), int(high), log=len(spec["int"]) > 2)
        elif isinstance(spec, list) and len(spec) in (2, 3) and all(isinstance(v, (int, float)) for v in spec[:2]):
            low, high = float(spec[0]), float(spec[1])
            log = len(spec) == 3 and spec[2] == "log"
            if low >= high or (log and low <= 0):
                raise ValueError(f"{name}: bad range {spec}")
            distributions[name] = FloatDistribution(low, high, log=log)
        else:
            raise ValueError(f"{name}: cannot read {spec!r}; use [low, high], [low, high, log], "
                             f"{{choices: [...]}} or {{int: [low, high]}}")
    return distributions
