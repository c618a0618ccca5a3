"""Experiment tracking of local runs: an MLflow server over the home (``mlflow_server``), started on demand,
and each finished execution logged to it (``mlflow_runs``). Optional: nothing imports it unless config's
``tracking.mlflow.enabled`` is true."""
