"""Industry 4.0 domain functions: OEE, SPC quality inspection, production scheduling,
predictive maintenance, energy and sensor anomalies.

Pure computations: plain Python / numpy inputs or the request Structs of
:mod:`avila.schemas.industry40` in, JSON-ready dicts shaped per ``API.md`` out. Bad input
raises :class:`avila.errors.ValidationFailed` with a stable, domain-specific code.
Importing this package does not import OR-Tools; ``avila.industry40.optimize`` does.
"""

from avila.industry40.anomaly import detect_anomalies, robust_zscores
from avila.industry40.energy import energy_consumption, forecast_next_day, peak_demand
from avila.industry40.maintenance import (
    estimate_rul,
    phm08_score,
    predict_maintenance,
    reliability_metrics,
)
from avila.industry40.oee import calculate_oee, classify_oee, oee_from_shift
from avila.industry40.quality import (
    defect_rate,
    first_pass_yield,
    inspect_quality,
    rolled_throughput_yield,
)

__all__ = [
    "calculate_oee",
    "classify_oee",
    "defect_rate",
    "detect_anomalies",
    "energy_consumption",
    "estimate_rul",
    "first_pass_yield",
    "forecast_next_day",
    "inspect_quality",
    "oee_from_shift",
    "peak_demand",
    "phm08_score",
    "predict_maintenance",
    "reliability_metrics",
    "robust_zscores",
    "rolled_throughput_yield",
]
