"""The experiment lab: splits, the Optuna search over CatBoost, calibration, evaluation and plots,
MLflow tracking and registry, and the promotion gate.

Entry points (the `churnguard` CLI wires them): `training.tune.run_tune` and
`training.promote.run_promote`. The lab imports `churnguard/` and never `service/` or `monitoring/`.
"""
