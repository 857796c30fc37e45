"""Example rows of the shipped tasks (`tasks/*.yaml`), for the services' OpenAPI documents: one
set, so that ingest's and serving's examples show the same rows."""

from __future__ import annotations

from pydantic import JsonValue

ELEC_FEATURES: dict[str, JsonValue] = {
    "period": 0.5,
    "nswprice": 0.06,
    "nswdemand": 0.4,
    "vicprice": 0.003,
    "vicdemand": 0.42,
    "transfer": 0.41,
}
# COMPAS's model uses the first six; `race` and `sex` are required all the same: they are kept
# with every row and prediction for the task's bias audits.
COMPAS_FEATURES: dict[str, JsonValue] = {
    "age": 34,
    "priors_count": 2,
    "juv_fel_count": 0,
    "juv_misd_count": 0,
    "juv_other_count": 0,
    "c_charge_degree": "F",
    "race": "Caucasian",
    "sex": "Male",
}
