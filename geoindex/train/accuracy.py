"""The accuracy harness: great-circle errors -> the standard image-geolocation table.

Street 1 km, city 25 km, region 200 km, country 750 km, continent 2,500 km (Im2GPS's thresholds,
as GeoCLIP reports them), the median and the 90th percentile. The benchmarks and the training
loop's held-out evaluation both use it.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS_KM = (1, 25, 200, 750, 2500)


def accuracy_table(errors_km: np.ndarray) -> dict:
    """Share of predictions within each threshold (in %), median and p90 error in km."""
    errors_km = np.asarray(errors_km, dtype=np.float64)
    out = {f"within_{t}km": round(100 * float(np.mean(errors_km <= t)), 2) for t in THRESHOLDS_KM}
    out["median_km"] = round(float(np.median(errors_km)), 2)
    out["p90_km"] = round(float(np.percentile(errors_km, 90)), 2)
    out["n"] = int(len(errors_km))
    return out
