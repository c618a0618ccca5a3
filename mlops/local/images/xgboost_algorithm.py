"""SageMaker's built-in XGBoost algorithm (algorithm mode) on the ``xgboost`` PyPI package.

Run inside a training job, or a serving container, as the image's own entrypoint would be::

    python -m mlops.local.images.xgboost_algorithm train [--image IMAGE_URI_OR_TAG]
    python3 xgboost_algorithm.py serve [--image IMAGE_URI_OR_TAG]

It reads the SageMaker container contract (``/opt/ml/input/config/{hyperparameters,inputdataconfig,
resourceconfig}.json``, ``/opt/ml/input/data/<channel>/``), trains with ``xgboost.train`` and writes
``/opt/ml/model/xgboost-model``; on failure it writes one line to ``/opt/ml/output/failure`` and exits 1.
Each path is taken from the ``SM_*`` variable the SageMaker training toolkit sets for it when present (as
the container does, and as the local runtime rewrites them without namespaces), else from ``/opt/ml``.

Self-contained on purpose: stdlib, numpy, scipy, xgboost (pandas for CSV with empty fields, pyarrow for
Parquet, imported when needed); nothing from ``mlops``, so the file also runs as a plain script in an image's
own environment: Python 3.7 or later, xgboost 1.0 or later (checked with 1.0.2 on Python 3.7, 1.7.6 on 3.9
and 3.2.0 on 3.11; training across hosts needs xgboost 2.0). Without ``--image`` the image is the one whose
xgboost is installed (before 2.0), else 1.7-1.

Facts carried over from github:aws/sagemaker-xgboost-container, branch ``1.7-1`` (commit f7a93a21) unless
noted; paths under ``src/``:

* Hyperparameters, their types, ranges, aliases and cross-checks, and the error texts:
  ``sagemaker_xgboost_container/algorithm_mode/hyperparameter_validation.py`` and
  ``sagemaker_algorithm_toolkit/hyperparameter_validation.py``. ``num_round`` is the only required one; the
  algorithm fills in no defaults itself, XGBoost's own apply (eta 0.3, max_depth 6, objective
  reg:squarederror, ... as the developer guide's ``xgboost_hyperparameters.md`` lists them). An unknown
  hyperparameter is an error ("Extraneous hyperparameter found").
* Channels ``train`` (required), ``validation``, ``code``; content types csv / libsvm / parquet /
  recordio-protobuf; ``text/libsvm`` when ContentType is absent; the (ContentType, TrainingInputMode,
  S3DistributionType) triple must be one the algorithm declares, so ``text/csv; label_size=1`` is refused
  at training: ``algorithm_mode/channel_validation.py``, ``sagemaker_algorithm_toolkit/channel_validation.py``.
* Data: label in the first column (CSV, Parquet), CSV delimiter sniffed from the first line, instance
  weights in the second CSV column with ``csv_weights=1`` or as ``label:weight`` in libsvm, files read up to
  3 folder levels deep, a hidden file in a channel is an error: ``data_utils.py``.
* Training: evals ``train`` and ``validation``; container metrics (accuracy, f1, r2, ...) computed beside
  XGBoost's; early stopping on the *last* ``eval_metric`` (or the tuning objective) over ``validation``,
  keeping the best iteration, and no early stopping without an eval_metric or a validation channel:
  ``algorithm_mode/train.py``, ``algorithm_mode/train_utils.py``, ``callback.py``, ``metrics/custom_metrics.py``.
* Model file ``xgboost-model``: ``Booster.save_model`` from 1.3-1 on, a pickled Booster before
  (branches ``0.90-1`` .. ``1.2-2`` ``pkl.dump(bst, ...)``); the developer guide (``xgboost.md``, 2023):
  "For v1.3-1 and later, SageMaker XGBoost saves the model in the XGBoost internal binary format, using
  Booster.save_model. Previous versions use the Python pickle module". With the xgboost 3.x installed here
  ``save_model`` writes UBJSON, which ``Booster.load_model`` reads; a pickle is not loadable by
  ``load_model`` and vice versa, so the format follows the image version (``--image``; default 1.7-1).
* Metric lines: XGBoost's ``EvaluationMonitor`` prints ``[0]\\ttrain-rmse:0.48113\\tvalidation-rmse:0.48427``
  (``{score:.5f}``; ``%g`` in 0.90/1.0). SageMaker's log pipeline shows the tab as ``#011`` (CloudWatch, e.g.
  ``[0]#011train-error:0.077154#011validation-error:0.099099`` in the outputs of amazon-sagemaker-examples
  ``archived/getting_started/xgboost_customer_churn_studio.ipynb``) and the MetricDefinitions SageMaker
  defines for the algorithm match that text literally: ``algorithm_mode/metrics.py`` has
  ``.*\\[[0-9]+\\].*#011validation-<metric>:(\\S+)``, and DescribeTrainingJob of a built-in
  ``sagemaker-xgboost:1.5-1`` job lists ``train:<m>`` / ``validation:<m>`` with
  ``.*\\[[0-9]+\\].*#011validation-rmse:([-+]?[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*``. The local runtime
  applies regexes to the raw line, so this prints the ``#011`` itself (:data:`FIELD_SEPARATOR`): the log
  reads as CloudWatch does and :data:`METRIC_DEFINITIONS` match.
* Failure: the container's runner (sagemaker-containers ``_trainer.py``) writes ``framework error:`` plus a
  traceback to ``/opt/ml/output/failure`` and exits 1; here the file holds only the error's one line.

Versions before 3.0-5 ran XGBoost < 2.0, whose defaults differ from the 3.x installed here; for them this
sets what those versions used unless given: ``base_score=0.5`` (2.0+ estimates it from the labels),
``tree_method`` exact on one host and approx across hosts (2.0+ "auto" is hist), and before 1.3 the default
eval metric error / merror for binary:logistic / multi:* (1.3+ logloss / mlogloss). Before 1.3 early
stopping is XGBoost's own (``xgb.train(early_stopping_rounds=...)``: last eval set, last metric, all trees
kept; branch ``1.0-1``). ``reg:linear`` trains as ``reg:squarederror`` (XGBoost's own alias) and
``gpu_hist`` as ``hist`` on ``device=cuda`` (CPU when no GPU is visible).

Deliberate differences: rmse and mae come from XGBoost (the algorithm recomputes them on margins without
instance weights; equal for identity-link objectives without weights); the algorithm's own metrics get class
labels from probabilities in every version (the 3.x container compares probabilities with 0); early
stopping maximizes ``ndcg@n`` / ``map@n`` (the algorithm only maximizes names in its list).

Across ``InstanceCount`` hosts (``algorithm_mode/train.py``, ``distributed.py``): every host reads its own
channel data; the hosts first agree on which of them have data (a group whose tracker runs on the first
host, port 9099), a host without data leaves (exit 0), and the rest train as one XGBoost collective group
(port 9100, ranks in host order); metric lines come from the group's first host, which writes the model.

Not here: Pipe mode, recordio-protobuf input, ``_kfold`` cross-validation, Dask GPU training, checkpoint
resume and SageMaker Debugger; each is refused with one line.

``serve`` (:func:`serve`) answers SageMaker's serving contract as the image's algorithm-mode app does
(``algorithm_mode/serve.py``, a Flask app under gunicorn, and ``serve_utils.py``, ``encoder.py``,
``data_utils.py``; the response encoders are sagemaker-containers 2.8.6.post2's ``_encoders.py``, the
version the 1.7-1 image pins), on the standard library's threaded HTTP/1.1 server:

* Environment: the model dir is ``SM_MODEL_DIR`` (default ``/opt/ml/model``); TCP on ``0.0.0.0`` port
  ``SAGEMAKER_BIND_TO_PORT`` (default 8080), and also the Unix socket ``MLOPS_SERVING_SOCKET`` names when set
  (a stale socket file there is replaced; the file is removed on exit). ``SAGEMAKER_MODEL_SERVER_WORKERS`` and
  ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` size gunicorn in the image and are ignored. ``SIGTERM`` stops serving and
  exits 0. Logs (one line per invocation, none for ``/ping``) go to stderr; nothing is written to disk.
* The model: every regular file of the model dir but dotfiles; with ``SAGEMAKER_INFERENCE_ENSEMBLE`` (default
  ``true``, 1.2-1 and earlier: one file) more than one file is an ensemble whose predictions are averaged
  (voted for ``multi:softmax`` / ``binary:hinge``), else the one file (``xgboost-model`` when there). Each file
  loads as a pickled Booster or with ``Booster.load_model``, trying the image version's format first (the
  container tries pickle first). No loadable model: one line on stderr, exit 1 (gunicorn's worker exits).
* ``GET /ping`` 200 once the model is loaded; ``GET /execution-parameters`` (MaxConcurrentTransforms,
  BatchStrategy MULTI_RECORD, MaxPayloadInMB from ``MAX_CONTENT_LENGTH``, default 6 MiB; a larger body: 413).
* ``POST /invocations``, answered in the container's order: an empty body 204; the Content-Type decoded,
  failures 415 (``text/csv`` / ``csv``, parameters ignored but ``label_size`` must be 1, the delimiter sniffed
  from the first line, empty fields missing; ``text/libsvm`` / ``text/x-libsvm`` / ``libsvm`` and no
  Content-Type at all, the label ignored; anything else, ``application/json`` included, is "not supported");
  the prediction, failures 400 (for a pickled model the container's feature-count check, else XGBoost's own:
  more columns than the model's features); the Accept type, 406 unless one of ``application/json``,
  ``application/jsonlines``, ``application/x-recordio-protobuf``, ``text/csv`` (none or ``*/*``:
  ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``, default ``text/csv``). ``text/csv`` answers a line per record
  (a comma-separated row of class probabilities for ``multi:softprob``), ``application/json``
  ``{"predictions": [{"score": ...}, ...]}``; ``application/jsonlines`` and recordio-protobuf have no encoder
  there without selectable content, so the container answers 500, as this does. With ``SAGEMAKER_BATCH``
  set (transform jobs) each record's prediction is ``str()``-ed on its own line whatever the Accept.
* Selectable inference content (``SAGEMAKER_INFERENCE_OUTPUT``, e.g. ``predicted_label,probabilities``;
  1.0-1 on): the keys the model's objective allows, NaN for the others, as JSON, JSON Lines or CSV (a list
  quoted: ``1,"[0.1, 0.9]"``).
* Before 1.2-2 (branches ``0.90-2``, ``1.0-1``, ``1.2-1``) the Accept header is read only with selectable
  content: predictions are ``text/csv`` on one line, comma-separated.

Serving differences: error bodies are one line (the container's are multi-line and its log lines carry
tracebacks); a pickled model trained with early stopping predicts with its best iteration's trees through
``iteration_range`` where the installed XGBoost has no ``ntree_limit`` (what the container's
``best_ntree_limit`` does); one threaded process serves, predictions one at a time; recordio-protobuf requests
(415) and recordio-protobuf responses of selectable content (406) are refused.
"""

from __future__ import annotations

import argparse
import ast
import csv
import inspect
import json
import logging
import os
import pickle
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("sagemaker-xgboost")

MODEL_NAME = "xgboost-model"
DEFAULT_VERSION = "1.7-1"
ML = "/opt/ml"
# What SageMaker's log pipeline turns the tab between XGBoost's eval fields into, and what its
# MetricDefinitions for the algorithm match (see the module docstring).
FIELD_SEPARATOR = "#011"

# sagemaker_xgboost_container/constants/xgb_constants.py
XGB_MAXIMIZE_METRICS = [
    "accuracy", "auc", "aucpr", "balanced_accuracy", "f1", "f1_binary", "f1_macro", "map", "ndcg",
    "precision", "r2", "recall", "precision_macro", "precision_micro", "recall_macro", "recall_micro",
]  # fmt: skip
XGB_MINIMIZE_METRICS = [
    "aft-nloglik", "cox-nloglik", "error", "gamma-deviance", "gamma-nloglik",
    "interval-regression-accuracy", "logloss", "mae", "mape", "merror", "mlogloss", "mphe", "mse",
    "poisson-nloglik", "rmse", "rmsle", "tweedie-nloglik",
]  # fmt: skip
CUSTOMER_ERRORS = [
    "label must be in [0,1] for logistic regression",
    "label must be in [0, num_class)",
    "Target is multiclass but average='binary'",
    "feature_names mismatch",
    "Check failed: preds.size() == info.labels_.size()",
    "Check failed: !auc_error AUC: the dataset only contains pos or neg samples",
    "Check failed: base_score > 0.0f && base_score < 1.0f base_score must be in (0,1) for logistic loss",
    "Check failed: label_correct PoissonRegression: label must be nonnegative",
    "Check failed: label_correct TweedieRegression: label must be nonnegative",
    "Parameter reg_lambda should be greater equal to 0",
    # The same checks as XGBoost 3.x words them.
    "label must be in (0, 1) for logistic regression",
    "base_score must be in (0,1) for the logistic loss",
    "label must be discrete values in the range of [0, num_class)",
    "label must be non-negative for Poisson/Tweedie regression",
]

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
# The form DescribeTrainingJob shows for the built-in algorithm's MetricDefinitions.
METRIC_DEFINITIONS = [
    {"Name": f"{data}:{m}", "Regex": rf".*\[[0-9]+\].*#011{data}-{m}:{_NUMBER}.*"}
    for data in ("train", "validation")
    for m in XGB_MAXIMIZE_METRICS + XGB_MINIMIZE_METRICS
]

_IMAGE = re.compile(
    r"(?:^|/)(?P<repo>sagemaker-xgboost|xgboost)(?::(?P<tag>[^/@\s]+))?(?:@sha256:[0-9a-f]+)?$"
)
_ECR = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/")


class UserError(Exception):
    """A failure the job's request or data causes (the algorithm toolkit's UserError)."""


class AlgorithmError(Exception):
    """A failure inside training itself."""


# ---------------------------------------------------------------- image versions


def is_builtin_xgboost_image(image: str) -> bool:
    """Whether ``image`` names SageMaker's XGBoost algorithm image (``<acct>.dkr.ecr.<region>.amazonaws.com/
    sagemaker-xgboost:<tag>``, or the legacy ``.../xgboost:1``)."""
    return bool(_ECR.match(image or "")) and bool(_IMAGE.search(image))


def framework_version(image: str | None) -> str:
    """``1.7-1`` for ``...sagemaker-xgboost:1.7-1-cpu-py3``, a bare ``1.7-1``, ...; ``0.72`` for the legacy
    ``xgboost:1`` / ``xgboost:latest`` image; :data:`DEFAULT_VERSION` when the tag says nothing."""
    text = (image or "").strip()
    m = _IMAGE.search(text)
    tag = (m.group("tag") or "") if m else text
    if m and m.group("repo") == "xgboost":
        return "0.72"
    v = re.match(r"^(\d+\.\d+)(?:-(\d+))?", tag)
    if not v:
        return DEFAULT_VERSION
    return f"{v.group(1)}-{v.group(2) or '1'}"


def version_for_installed_xgboost() -> str:
    """Without ``--image``: the image whose XGBoost is the one installed (an image's own environment), else
    :data:`DEFAULT_VERSION` (XGBoost 2.0 and later stand in for any image)."""
    installed = _xgb_version()
    for below, version in (((1, 0), "0.90-1"), ((1, 2), "1.0-1"), ((1, 3), "1.2-2"), ((1, 5), "1.3-1"),
                           ((1, 7), "1.5-1"), ((2, 0), "1.7-1")):  # fmt: skip
        if installed < below:
            return version
    return DEFAULT_VERSION


def _vt(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


# ---------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class Interval:
    min_open: float | None = None
    min_closed: float | None = None
    max_open: float | None = None
    max_closed: float | None = None

    def __contains__(self, v: Any) -> bool:
        return not (
            (self.min_open is not None and v <= self.min_open)
            or (self.min_closed is not None and v < self.min_closed)
            or (self.max_open is not None and v >= self.max_open)
            or (self.max_closed is not None and v > self.max_closed)
        )

    def __str__(self) -> str:
        lo = (
            f"({self.min_open}, "
            if self.min_open is not None
            else (f"[{self.min_closed}, " if self.min_closed is not None else "(-inf, ")
        )
        hi = (
            f"{self.max_open})"
            if self.max_open is not None
            else (f"{self.max_closed}]" if self.max_closed is not None else "+inf)")
        )
        return lo + hi


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    kind: str  # int, float, cat, list, tuple, nested
    range: Any  # Interval, list, or (list, check) where check(values, value) -> bool
    required: bool = False

    def parse(self, raw: str) -> Any:
        if self.kind == "int":
            return int(raw)
        if self.kind == "float":
            return float(raw)
        if self.kind == "list":
            return raw.split(",")
        if self.kind in ("tuple", "nested"):
            value = ast.literal_eval(raw)
            if self.kind == "tuple":
                return tuple(value)
            return [list(inner) for inner in value]
        return raw

    def check_range(self, value: Any) -> None:
        rng, check = self.range if isinstance(self.range, tuple) else (self.range, None)
        if self.kind in ("list", "tuple", "nested"):
            items = [e for inner in value for e in inner] if self.kind == "nested" else value
            if any(not (check(rng, v) if check else v in rng) for v in items):
                raise UserError(f"Hyperparameter {self.name}: value {value} not in range {rng}")
        elif not (check(rng, value) if check else value in rng):
            raise UserError(f"Hyperparameter {self.name}: {value} is not in {rng}")


OBJECTIVES = [
    "aft_loss_distribution", "binary:logistic", "binary:logitraw", "binary:hinge", "count:poisson",
    "multi:softmax", "multi:softprob", "rank:pairwise", "rank:ndcg", "rank:map", "reg:linear",
    "reg:squarederror", "reg:logistic", "reg:gamma", "reg:pseudohubererror", "reg:squaredlogerror",
    "reg:absoluteerror", "reg:tweedie", "survival:aft", "survival:cox",
]  # fmt: skip
UPDATERS = [
    "grow_colmaker", "distcol", "grow_histmaker", "grow_skmaker", "sync", "refresh", "prune",
    "grow_colmaker", "distcol", "grow_histmaker", "grow_colmaker", "shotgun", "coord_descent", "refresh", "prune",
]  # fmt: skip


def _eval_metric_ok(supported: list[str], metric: str) -> bool:
    if "<function" in metric:
        raise UserError(f"User defined evaluation metric {metric} is not supported yet.")
    if "@" in metric:
        name, threshold = (part.strip() for part in metric.split("@", 1))
        if name not in ("error", "ndcg", "map"):
            raise UserError(
                f"Metric '{metric}' is not supported. Parameter 'eval_metric' with customized threshold should "
                "be one of these options: 'error', 'ndcg', 'map'."
            )
        try:
            float(threshold)
        except ValueError:
            raise UserError(f"Threshold value 't' in '{name}@t' expects float input.") from None
        return True
    return metric in supported


def _i(name, rng, required=False):
    return Hyperparameter(name, "int", rng, required)


def _f(name, rng):
    return Hyperparameter(name, "float", rng)


def _c(name, rng):
    return Hyperparameter(name, "cat", rng)


def _unit(open_low=False, open_high=False):
    return Interval(min_open=0 if open_low else None, min_closed=None if open_low else 0,
                    max_open=1 if open_high else None, max_closed=None if open_high else 1)  # fmt: skip


_NONNEG = Interval(min_closed=0)
_TRUE_FALSE = ["true", "false"]
METRIC_NAMES = [f"validation:{m}" for m in XGB_MAXIMIZE_METRICS + XGB_MINIMIZE_METRICS]

HYPERPARAMETERS: dict[str, Hyperparameter] = {
    h.name: h
    for h in [
        _i("num_round", Interval(min_closed=1), required=True),
        _i("csv_weights", Interval(min_closed=0, max_closed=1)),
        _i("early_stopping_rounds", Interval(min_closed=1)),
        _c("booster", ["gbtree", "gblinear", "dart"]),
        _i("verbosity", Interval(min_closed=0, max_closed=3)),
        _i("nthread", Interval(min_closed=1)),
        _f("eta", _unit()),
        _f("gamma", _NONNEG),
        _i("max_depth", _NONNEG),
        _f("min_child_weight", _NONNEG),
        _f("max_delta_step", _NONNEG),
        _f("subsample", _unit(open_low=True)),
        _f("colsample_bytree", _unit(open_low=True)),
        _f("colsample_bylevel", _unit(open_low=True)),
        _f("colsample_bynode", _unit(open_low=True)),
        _f("lambda", _NONNEG),
        _f("alpha", _NONNEG),
        _c("tree_method", ["auto", "exact", "approx", "hist", "gpu_hist"]),
        _f("sketch_eps", _unit(open_low=True, open_high=True)),
        _f("scale_pos_weight", Interval(min_open=0)),
        Hyperparameter("updater", "list", UPDATERS),
        _c("dsplit", ["row", "col"]),
        _i("refresh_leaf", Interval(min_closed=0, max_closed=1)),
        _c("process_type", ["default", "update"]),
        _c("grow_policy", ["depthwise", "lossguide"]),
        _i("max_leaves", _NONNEG),
        _i("max_bin", _NONNEG),
        _c("predictor", ["auto", "cpu_predictor", "gpu_predictor"]),
        Hyperparameter("monotone_constraints", "tuple", [-1, 0, 1]),
        Hyperparameter("interaction_constraints", "nested", Interval(min_closed=1)),
        _c("sample_type", ["uniform", "weighted"]),
        _c("normalize_type", ["tree", "forest"]),
        _f("rate_drop", _unit()),
        _i("one_drop", Interval(min_closed=0, max_closed=1)),
        _f("skip_drop", _unit()),
        _f("lambda_bias", _unit()),
        _f("tweedie_variance_power", Interval(min_open=1, max_open=2)),
        _c("objective", OBJECTIVES),
        _i("num_class", Interval(min_closed=2)),
        _f("base_score", _NONNEG),
        _i("_kfold", Interval(min_closed=2)),
        _i("_num_cv_round", Interval(min_closed=1)),
        _c("_tuning_objective_metric", METRIC_NAMES),
        Hyperparameter("eval_metric", "list", (XGB_MAXIMIZE_METRICS + XGB_MINIMIZE_METRICS, _eval_metric_ok)),
        _i("seed", Interval(min_open=-(2**31), max_open=2**31 - 1)),
        _i("num_parallel_tree", Interval(min_closed=1)),
        _c("save_model_on_termination", _TRUE_FALSE),
        _c("aft_loss_distribution", ["normal", "logistic", "extreme"]),
        _f("aft_loss_distribution_scale", _NONNEG),
        _c("deterministic_histogram", _TRUE_FALSE),
        _c("sampling_method", ["uniform", "gradient_based"]),
        _i("prob_buffer_row", Interval(min_open=1.0)),
        _c("use_dask_gpu_training", _TRUE_FALSE),
    ]
}
ALIASES = {"learning_rate": "eta", "min_split_loss": "gamma", "reg_lambda": "lambda", "reg_alpha": "alpha"}
_KIND_WORD = {"int": "an integer", "float": "a number", "tuple": "a tuple", "nested": "a nested list"}


# Accepted by the images before 1.2-1 (branch 1.0-1, hyperparameter_validation.py; the Projects seed code
# passes silent=0), removed after: XGBoost deprecated it for verbosity.
_SILENT = Hyperparameter("silent", "int", Interval(min_closed=0, max_closed=1))


def validate_hyperparameters(raw: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """The algorithm's checks in its order: aliases, required, parse, range, cross-checks (``version``: the
    image's, e.g. ``1.0-1``; the hyperparameters it accepts differ a little by version)."""
    given = {ALIASES.get(k, k): str(v) for k, v in raw.items()}
    if "silent" in given and version is not None and _vt(version) < (1, 2):
        silent = _SILENT.parse(given.pop("silent"))
        _SILENT.check_range(silent)
        if silent and "verbosity" not in given:
            given["verbosity"] = "0"
    for name, hp in HYPERPARAMETERS.items():
        if hp.required and name not in given:
            raise UserError(f"Missing required hyperparameter: {name}")
    parsed: dict[str, Any] = {}
    for name, value in given.items():
        hp = HYPERPARAMETERS.get(name)
        if hp is None:
            raise UserError(f"Extraneous hyperparameter found: {name}")
        try:
            parsed[name] = hp.parse(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
            what = f" as {_KIND_WORD[hp.kind]}" if hp.kind in _KIND_WORD else ""
            raise UserError(
                f"Hyperparameter {name}: could not parse value {value!r}{what} (caused by {type(err).__name__})"
            ) from None
    for name, value in parsed.items():
        HYPERPARAMETERS[name].check_range(value)
    _check_dependencies(parsed)
    return parsed


def _check_dependencies(hps: dict[str, Any]) -> None:
    objective = hps.get("objective")
    if "updater" in hps:
        updaters = hps["updater"]
        tree_build = {"grow_colmaker", "distcol", "grow_histmaker", "grow_quantile_histmaker"}
        if hps.get("booster") == "gblinear":
            if not (len(updaters) == 1 and updaters[0] in ("shotgun", "coord_descent")):
                raise UserError("Linear updater should be one of these options: 'shotgun', 'coord_descent'.")
        elif hps.get("process_type") == "update":
            if not all(u in ("refresh", "prune") for u in updaters):
                raise UserError("process_type 'update' can only be used with updater 'refresh' and 'prune'")
        else:
            tree_plugins = tree_build | {"grow_skmaker", "sync", "refresh", "prune"}
            if not all(u in tree_plugins for u in updaters):
                raise UserError(
                    "Tree updater should be selected from these options: 'grow_colmaker', 'distcol', "
                    "'grow_histmaker', 'grow_skmaker', 'grow_quantile_histmaker', 'sync', 'refresh', 'prune'."
                )
            if sum(u in tree_build for u in updaters) > 1:
                raise UserError(
                    "Only one tree grow plugin can be selected. Choose one from the following: "
                    "'grow_colmaker', 'distcol', 'grow_histmaker', 'grow_skmaker'"
                )
    if objective in ("multi:softmax", "multi:softprob") and "num_class" not in hps:
        raise UserError("Require input for parameter 'num_class' for multi-classification")
    if "eval_metric" in hps:
        # The algorithm looks up the objective without a default; XGBoost's default is reg:squarederror.
        obj = objective or "reg:squarederror"
        if "auc" in hps["eval_metric"] and not obj.startswith(("binary:", "rank:")):
            raise UserError("Metric 'auc' can only be applied for classification and ranking problems.")
        if "aft-nloglik" in hps["eval_metric"] and obj != "survival:aft":
            raise UserError("Metric 'aft-nloglik' can only be applied for 'survival:aft' objective.")
    tree_method = hps.get("tree_method")
    if "monotone_constraints" in hps and tree_method not in ("exact", "hist"):
        raise UserError(
            "monotone_constraints can be used only when the tree_method parameter is set to "
            "either 'exact' or 'hist'."
        )
    if "interaction_constraints" in hps and tree_method not in ("exact", "hist", "approx"):
        raise UserError(
            "interaction_constraints can be used only when the tree_method parameter is set to "
            "either 'exact', 'hist' or 'approx'."
        )


# ---------------------------------------------------------------- channels

CSV, LIBSVM, PARQUET, RECORDIO = "csv", "libsvm", "parquet", "recordio-protobuf"
VALID_CONTENT_TYPES = [
    CSV, LIBSVM, PARQUET, RECORDIO, "text/csv", "text/libsvm", "text/x-libsvm", "application/x-parquet",
    "application/x-recordio-protobuf",
]  # fmt: skip
_FORMAT_OF = {
    CSV: CSV, "text/csv": CSV, LIBSVM: LIBSVM, "text/libsvm": LIBSVM, "text/x-libsvm": LIBSVM,
    PARQUET: PARQUET, "application/x-parquet": PARQUET, RECORDIO: RECORDIO,
    "application/x-recordio-protobuf": RECORDIO,
}  # fmt: skip
_MODES, _DISTRIBUTIONS = ("File", "Pipe"), ("ShardedByS3Key", "FullyReplicated")
_PIPE_CONTENT_TYPES = [
    CSV, PARQUET, RECORDIO, "text/csv", "application/x-parquet", "application/x-recordio-protobuf",
]  # fmt: skip


def validate_channels(data_config: dict[str, dict]) -> dict[str, dict]:
    """inputdataconfig.json checked as the algorithm declares its channels; returns each channel's config
    with ``ContentType`` filled in (``text/libsvm`` when absent)."""
    if "train" not in data_config:
        raise UserError("Missing required channel: train")
    out = {}
    for name, given in data_config.items():
        if name not in ("train", "validation", "code"):
            raise UserError(f"Extraneous channel found: {name}")
        value = dict(given)
        value.setdefault("ContentType", "text/libsvm")
        ct, mode = value["ContentType"], value.get("TrainingInputMode", "File")
        dist = value.get("S3DistributionType", "FullyReplicated")
        if name == "code":
            ok = (ct, mode, dist) == ("text/python", "File", "FullyReplicated")
            hint = "the code channel takes text/python in File mode, FullyReplicated"
        else:
            types = VALID_CONTENT_TYPES if mode == "File" else _PIPE_CONTENT_TYPES
            ok = ct in types and mode in _MODES and dist in _DISTRIBUTIONS
            hint = f"ContentType is one of {', '.join(types)}; TrainingInputMode File or Pipe"
        if not ok:
            raise UserError(f"Channel configuration for '{name}' channel is not supported: {given} ({hint})")
        out[name] = value
    for name in ("train", "validation"):
        value = out.get(name)
        if value is None:
            continue
        if value.get("TrainingInputMode", "File") == "Pipe":
            raise UserError(
                f"Pipe mode is not supported by the local XGBoost algorithm (channel '{name}'); use File"
            )
        if _FORMAT_OF[value["ContentType"]] == RECORDIO:
            raise UserError(
                f"{value['ContentType']} input is not supported by the local XGBoost algorithm (channel "
                f"'{name}'); use text/csv, text/libsvm or application/x-parquet"
            )
    return out


# ---------------------------------------------------------------- data

MAX_FOLDER_DEPTH = 3


def data_files(path: str) -> list[str]:
    """The files of a channel the algorithm reads: all files up to 3 folder levels deep, sorted; a hidden
    file anywhere is an error (as the algorithm's size check makes it)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        return []
    files, deeper = [], False
    for root, dirs, names in os.walk(path):
        dirs.sort()
        depth = 1 if root == path else os.path.relpath(root, path).count(os.sep) + 2
        for name in sorted(names):
            if name.startswith("."):
                raise UserError("Hidden file found in the data path! Remove that before training.")
            if depth > MAX_FOLDER_DEPTH:
                deeper = True
                continue
            files.append(os.path.join(root, name))
    if deeper:
        log.warning(
            "The depth of folder %s exceed the limit %d. Files in deeper sub dirs won't be loaded.",
            path, MAX_FOLDER_DEPTH,
        )  # fmt: skip
    return files


@dataclass
class Data:
    """One channel's rows: dense ``x`` (CSV, Parquet) or CSR parts (libsvm)."""

    label: Any
    x: Any = None
    csr: tuple | None = None  # (values, indices, indptr, num_col)
    weight: Any = None
    qid: Any = None

    @property
    def num_col(self) -> int:
        return self.csr[3] if self.csr is not None else self.x.shape[1]


def _sniff_delimiter(line: str) -> str:
    try:
        delimiter = csv.Sniffer().sniff(line).delimiter
    except Exception as err:
        raise UserError(f"Could not determine delimiter on line {line[:50]!r}: {err}") from None
    log.info("Determined delimiter of CSV input is '%s'", delimiter)
    return delimiter


def _load_csv_file(path: str, delimiter: str):
    """One CSV file as float64 rows: numpy's C reader, else pandas' (empty fields are missing values)."""
    import numpy as np

    try:
        return np.loadtxt(path, delimiter=delimiter, dtype="float64", ndmin=2, comments=None)
    except ValueError:
        pass
    import pandas as pd

    try:
        return pd.read_csv(path, header=None, sep=delimiter, dtype="float64").to_numpy()
    except Exception as err:
        msg = " ".join(str(err).split())
        raise UserError(f"Failed to load csv data from {path}: {msg}") from None


def _read_csv(files: list[str], csv_weights: int) -> Data | None:
    import numpy as np

    files = [f for f in files if os.path.getsize(f) > 0]
    if not files:
        return None
    with open(files[0], errors="ignore") as f:
        delimiter = _sniff_delimiter(f.readline())
    arrays = [_load_csv_file(path, delimiter) for path in files]
    widths = {a.shape[1] for a in arrays}
    if len(widths) > 1:
        raise UserError(f"Failed to load csv data: files have different numbers of columns {sorted(widths)}")
    data = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    first = 2 if csv_weights == 1 else 1
    if data.shape[1] <= first:
        raise UserError(
            f"Failed to load csv data: {data.shape[1]} column(s), no feature columns after the label"
        )
    weight = np.ascontiguousarray(data[:, 1]) if csv_weights == 1 else None
    return Data(
        label=np.ascontiguousarray(data[:, 0]), x=np.ascontiguousarray(data[:, first:]), weight=weight
    )


def _libsvm_error(line: str, number: int, path: str) -> UserError:
    return UserError(
        f"Line {number} '{line[:50].rstrip()}...' of file '{os.path.basename(path)}' is not 'LIBSVM' format. "
        "Please ensure the file is in 'LIBSVM' format."
    )


def _read_libsvm(files: list[str]) -> Data | None:
    """``<label>[:<weight>] [qid:<id>] <index>:<value> ...`` per line; indices are 0-based as given."""
    import numpy as np

    labels, weights, qids, values, indices, indptr = [], [], [], [], [], [0]
    any_weight = any_qid = False
    for path in files:
        with open(path, errors="replace") as f:
            for number, line in enumerate(f, 1):
                body = line.split("#", 1)[0].split()
                if not body:
                    continue
                head = body[0].split(":")
                try:
                    if len(head) > 2:
                        raise ValueError
                    labels.append(float(head[0]))
                    weights.append(float(head[1]) if len(head) == 2 else 1.0)
                    any_weight |= len(head) == 2
                    rest = body[1:]
                    if rest and rest[0].startswith("qid:"):
                        qids.append(int(rest[0][4:]))
                        any_qid = True
                        rest = rest[1:]
                    elif any_qid:
                        raise ValueError
                    for tok in rest:
                        idx, val = tok.split(":")
                        indices.append(int(idx))
                        values.append(float(val))
                except ValueError:
                    raise _libsvm_error(line, number, path) from None
                indptr.append(len(indices))
    if not labels:
        return None
    if any_qid and len(qids) != len(labels):
        raise UserError("Failed to load libsvm data: qid is given for some rows only")
    num_col = (max(indices) + 1) if indices else 0
    if indices and min(indices) < 0:
        raise UserError("Failed to load libsvm data: negative feature index")
    csr = (
        np.asarray(values, dtype=np.float32),
        np.asarray(indices, dtype=np.int64),
        np.asarray(indptr),
        num_col,
    )
    return Data(
        label=np.asarray(labels),
        csr=csr,
        weight=np.asarray(weights) if any_weight else None,
        qid=np.asarray(qids) if any_qid else None,
    )


def _read_parquet(files: list[str]) -> Data | None:
    import numpy as np

    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("application/x-parquet input needs the pyarrow package in this environment") from None
    files = [f for f in files if not os.path.basename(f).startswith("_")]
    arrays = []
    for path in files:
        try:
            arrays.append(pq.read_table(path).to_pandas().to_numpy(dtype="float64"))
        except Exception as err:
            msg = " ".join(str(err).split())
            raise UserError(f"Failed to load parquet data from {path}: {msg}") from None
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return None
    try:
        data = np.vstack(arrays)
    except ValueError as err:
        raise UserError(f"Failed to load parquet data: {err}") from None
    return Data(label=np.ascontiguousarray(data[:, 0]), x=np.ascontiguousarray(data[:, 1:]))


def read_channel(path: str, fmt: str, csv_weights: int) -> Data | None:
    files = data_files(path)
    if not files or sum(os.path.getsize(f) for f in files) == 0:
        return None
    data = {CSV: lambda: _read_csv(files, csv_weights), LIBSVM: lambda: _read_libsvm(files),
            PARQUET: lambda: _read_parquet(files)}[fmt]()  # fmt: skip
    if data is not None and len(data.label) == 0:
        raise UserError("Got input data without labels. Please check the input data set.")
    return data


def to_dmatrix(data: Data, num_col: int):
    import xgboost as xgb

    if data.csr is not None:
        from scipy.sparse import csr_matrix

        values, indices, indptr, _ = data.csr
        x = csr_matrix((values, indices, indptr), shape=(len(data.label), num_col))
    else:
        x = data.x
    dmatrix = xgb.DMatrix(x, label=data.label, weight=data.weight)
    if data.qid is not None:  # query groups: runs of equal qid (DMatrix(qid=) is xgboost >= 1.3)
        import numpy as np

        starts = np.flatnonzero(np.r_[True, data.qid[1:] != data.qid[:-1]])
        dmatrix.set_group(np.diff(np.r_[starts, len(data.qid)]))
    return dmatrix


def _warn_same_files(train_path: str, val_path: str) -> None:
    """The algorithm's warning for same-named, same-sized files in both channels."""
    if not (os.path.isdir(train_path) and os.path.isdir(val_path)):
        return
    train = {f for f in os.listdir(train_path) if os.path.isfile(os.path.join(train_path, f))}
    for name in sorted(train & set(os.listdir(val_path))):
        a, b = os.path.join(train_path, name), os.path.join(val_path, name)
        if os.path.isfile(b) and os.path.getsize(a) == os.path.getsize(b):
            log.warning(
                "Suspected identical files found. (%s and %s with same size %d bytes). Note: Duplicate data in "
                "the training set and validation set is usually not intentional and can impair the validity of "
                "the model evaluation by the validation score.", a, b, os.path.getsize(b),
            )  # fmt: skip


# ---------------------------------------------------------------- container metrics

_LOGISTIC = ("binary:logistic", "reg:logistic")
_LOG_LINK = ("count:poisson", "reg:gamma", "reg:tweedie", "survival:cox", "survival:aft")


def _margin(objective: str, preds):
    """Predictions back to the margin the algorithm's metrics were given (1.x: ``feval`` saw margins)."""
    import numpy as np

    if objective in _LOGISTIC:
        p = np.clip(preds.astype("float64"), 1e-15, 1 - 1e-15)
        return np.log(p / (1 - p))
    if objective in _LOG_LINK:
        return np.log(np.maximum(preds.astype("float64"), 1e-300))
    return preds


def _from_margin(objective: str, margin):
    import numpy as np

    if objective in _LOGISTIC:
        return 1.0 / (1.0 + np.exp(-margin))
    if objective in _LOG_LINK:
        return np.exp(margin)
    return margin


def _class_labels(objective: str, preds, is_margin: bool):
    """Class labels as the algorithm derives them from margins: argmax over classes, else margin > 0."""
    import numpy as np

    if preds.ndim == 2:
        return np.argmax(preds, axis=-1)
    if objective == "multi:softmax" and not is_margin:
        return preds.astype(int)
    margin = preds if is_margin else _margin(objective, preds)
    return (margin > 0.0).astype(int)


def _per_class(y, p):
    import numpy as np

    labels = np.union1d(y, p)
    tp = np.array([np.sum((p == c) & (y == c)) for c in labels], dtype=float)
    pred = np.array([np.sum(p == c) for c in labels], dtype=float)
    true = np.array([np.sum(y == c) for c in labels], dtype=float)
    return labels, tp, pred, true


def _div(a, b):
    import numpy as np

    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)


def _binary(kind: str):
    def score(y, p):
        labels, tp, pred, true = _per_class(y, p)
        if len(labels) > 2:
            raise UserError(
                "Target is multiclass but average='binary'. Please choose another average setting, one of "
                "[None, 'micro', 'macro', 'weighted']."
            )
        i = list(labels).index(1) if 1 in labels else None
        if i is None:
            return 0.0
        prec, rec = _div(tp, pred)[i], _div(tp, true)[i]
        if kind == "precision":
            return prec
        if kind == "recall":
            return rec
        return 2 * tp[i] / (pred[i] + true[i]) if pred[i] + true[i] else 0.0

    return score


def _macro(kind: str):
    def score(y, p):
        _, tp, pred, true = _per_class(y, p)
        per = {"precision": _div(tp, pred), "recall": _div(tp, true), "f1": _div(2 * tp, pred + true)}[kind]
        return float(per.mean())

    return score


def _micro(y, p):
    import numpy as np

    return float(np.mean(y == p))


def _balanced_accuracy(y, p):
    import numpy as np

    classes = np.unique(y)
    return float(np.mean([np.mean(p[y == c] == c) for c in classes]))


def _regression(kind: str):
    def score(y, m):
        import numpy as np

        err = y - m
        if kind == "mse":
            return float(np.mean(err**2))
        ss_res, ss_tot = float(np.sum(err**2)), float(np.sum((y - y.mean()) ** 2))
        if ss_tot == 0:
            return 1.0 if ss_res == 0 else 0.0
        return 1 - ss_res / ss_tot

    return score


# Name -> (on class labels?, score(y_true, y)) for the metrics the algorithm computes itself
# (metrics/custom_metrics.py). rmse and mae, also there, are left to XGBoost's own (same values for
# identity-link objectives; XGBoost's apply instance weights and the link).
CONTAINER_METRICS: dict[str, tuple[bool, Callable]] = {
    "accuracy": (True, _micro),
    "balanced_accuracy": (True, _balanced_accuracy),
    "f1": (True, _macro("f1")),
    "f1_binary": (True, _binary("f1")),
    "f1_macro": (True, _macro("f1")),
    "precision": (True, _binary("precision")),
    "precision_macro": (True, _macro("precision")),
    "precision_micro": (True, _micro),
    "recall": (True, _binary("recall")),
    "recall_macro": (True, _macro("recall")),
    "recall_micro": (True, _micro),
    "mse": (False, _regression("mse")),
    "r2": (False, _regression("r2")),
}


def _allgather(a):
    """Every worker's rows of ``a``, in rank order, on every worker (an allreduce of zero-padded blocks)."""
    import numpy as np
    from xgboost import collective

    world, rank = collective.get_world_size(), collective.get_rank()
    sizes = np.zeros(world)
    sizes[rank] = a.shape[0]
    sizes = collective.allreduce(sizes, collective.Op.SUM).astype(int)
    out = np.zeros((int(sizes.sum()), *a.shape[1:]))
    start = int(sizes[:rank].sum())
    out[start : start + a.shape[0]] = a
    return collective.allreduce(out, collective.Op.SUM)


def container_metric(
    names: list[str], objective: str, on_margin: bool, preds_are_margin: bool, distributed: bool = False
) -> Callable:
    """The algorithm's own metrics for xgboost.train (``custom_metric``, or ``feval`` before 1.6), in the
    order given. ``on_margin``: the image's algorithm computed mse / r2 on margins (1.x: its ``feval`` got
    margins); ``preds_are_margin``: what this xgboost passes (``feval`` from 1.2 on: margins). Across hosts
    they are computed over all hosts' rows, so every worker sees (and early-stops on) the same value."""

    def evaluate(preds, dmatrix):
        y = dmatrix.get_label()
        if distributed:
            y, preds = _allgather(y), _allgather(preds)
        if on_margin and not preds_are_margin:
            values = _margin(objective, preds)
        elif preds_are_margin and not on_margin:
            values = _from_margin(objective, preds)
        else:
            values = preds
        out = []
        for name in names:
            on_labels, fn = CONTAINER_METRICS[name]
            if preds.size == 0:
                out.append((name, 0.0))
            elif on_labels:
                out.append((name, float(fn(y, _class_labels(objective, preds, preds_are_margin)))))
            else:
                out.append((name, float(fn(y, values))))
        return out

    return evaluate


# ---------------------------------------------------------------- training

_NOT_XGB_PARAMS = (
    "num_round", "csv_weights", "early_stopping_rounds", "save_model_on_termination", "_tuning_objective_metric",
    "_kfold", "_num_cv_round", "use_dask_gpu_training",
)  # fmt: skip


def _xgb_module():
    import xgboost

    return xgboost


def _xgb_version() -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", _xgb_module().__version__)[:2])


def _metric_line(epoch: int, fields: list, fmt: Callable) -> str:
    """XGBoost's EvaluationMonitor line (``[epoch]\\t<data>-<metric>:<value>...``), with the tab as SageMaker's
    logs show it."""
    return f"[{epoch}]" + "".join(f"{FIELD_SEPARATOR}{name}:{fmt(value)}" for name, value in fields)


def _monitor(fmt: Callable):
    """Prints each round's metric line: a TrainingCallback (xgboost >= 1.3), else a legacy callback."""
    import xgboost as xgb

    if _xgb_version() < (1, 3):

        def legacy(env):
            fields = [(item[0], item[1]) for item in env.evaluation_result_list]
            if fields:
                print(_metric_line(env.iteration, fields, fmt), flush=True)

        return legacy

    class Monitor(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            fields = [
                (f"{data}-{name}", values[-1][0] if isinstance(values[-1], tuple) else values[-1])
                for data, metrics in evals_log.items()
                for name, values in metrics.items()
            ]
            if fields:
                print(_metric_line(epoch, fields, fmt), flush=True)
            return False

    return Monitor()


def _intermediate_saver(save: Callable):
    import xgboost as xgb

    if _xgb_version() < (1, 3):
        return lambda env: save(env.model)

    class SaveIntermediateModel(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            save(model)
            return False

    return SaveIntermediateModel()


def xgb_params(hps: dict[str, Any], version: str, num_gpus: int, distributed: bool = False) -> dict[str, Any]:
    params = {k: v for k, v in hps.items() if k not in _NOT_XGB_PARAMS and k != "eval_metric"}
    if "updater" in params:
        params["updater"] = ",".join(params["updater"])
    if "monotone_constraints" in params:
        params["monotone_constraints"] = (
            "(" + ",".join(str(int(v)) for v in params["monotone_constraints"]) + ")"
        )
    if "interaction_constraints" in params:
        params["interaction_constraints"] = json.dumps(params["interaction_constraints"])
    if params.get("objective") == "reg:linear":
        log.info(
            "objective reg:linear is deprecated in XGBoost in favor of reg:squarederror; training with that"
        )
        params["objective"] = "reg:squarederror"
    if _xgb_version() < (2, 0):
        return _image_defaults(params, version, distributed)
    if params.pop("predictor", None) is not None:
        log.info("predictor was removed in XGBoost 2.0; prediction runs on the training device")
    if params.get("tree_method") == "gpu_hist":
        params["tree_method"] = "hist"
        params["device"] = "cuda"
        if num_gpus == 0:
            log.warning(
                "tree_method gpu_hist: no GPU on this host (SM_NUM_GPUS=0); XGBoost trains on the CPU"
            )
    return _image_defaults(params, version, distributed)


def _image_defaults(params: dict, version: str, distributed: bool) -> dict:
    if _vt(version) < (3, 0):
        # The XGBoost < 2.0 inside these images: base_score 0.5, and "auto" meant exact greedy on one host,
        # approx across hosts.
        params.setdefault("base_score", 0.5)
        tree_default = params.get("tree_method", "auto") == "auto" and "updater" not in params
        if tree_default and params.get("booster") != "gblinear" and params.get("grow_policy") != "lossguide":
            params["tree_method"] = "approx" if distributed else "exact"
    return params


def train(
    hps: dict[str, Any],
    train_data: Data,
    val_data: Data | None,
    version: str,
    model_dir: str,
    num_gpus: int,
    *,
    is_master: bool = True,
    distributed: bool = False,
):
    """Trains on this host's data (inside a communicator group when ``distributed``); the master prints the
    metric lines and writes the model."""
    import xgboost as xgb

    num_round = hps["num_round"]
    params = xgb_params(hps, version, num_gpus, distributed)
    objective = params.get("objective", "reg:squarederror")
    old = _vt(version) < (1, 3)

    tuning = hps.get("_tuning_objective_metric")
    tuning_metrics = tuning.split(":", 1)[1].split(",") if tuning else None
    eval_metric = hps.get("eval_metric")
    union = sorted(set(tuning_metrics) | set(eval_metric or [])) if tuning_metrics else eval_metric
    custom = [m for m in dict.fromkeys(union or []) if m in CONTAINER_METRICS]
    native = [m for m in dict.fromkeys(union or []) if m not in CONTAINER_METRICS]
    if native:
        params["eval_metric"] = native
    elif old and objective == "binary:logistic":
        params["eval_metric"] = ["error"]
    elif old and objective.startswith("multi:"):
        params["eval_metric"] = ["merror"]

    num_col = max(train_data.num_col, val_data.num_col if val_data else 0)
    if val_data is not None and train_data.csr is None and val_data.num_col != train_data.num_col:
        raise UserError(
            f"feature_names mismatch: validation data has {val_data.num_col} feature columns, "
            f"train data has {train_data.num_col}"
        )
    dtrain = to_dmatrix(train_data, num_col)
    dval = to_dmatrix(val_data, num_col) if val_data is not None else None
    log.info("Train matrix has %d rows and %d columns", dtrain.num_row(), dtrain.num_col())
    if dval is not None:
        log.info("Validation matrix has %d rows", dval.num_row())
    evals = [(dtrain, "train")] + ([(dval, "validation")] if dval is not None else [])

    fmt = (lambda v: f"{v:g}") if _vt(version) < (1, 2) else (lambda v: f"{v:.5f}")
    callbacks = [_monitor(fmt)] if is_master else []
    extra = {}  # xgb.train arguments that depend on the installed xgboost
    rounds = hps.get("early_stopping_rounds")
    callback_classes = _xgb_version() >= (1, 3)
    if rounds and (old or not callback_classes):
        # XGBoost's own early stopping (the algorithm before 1.3): the last eval set's last metric.
        if callback_classes:
            callbacks.append(xgb.callback.EarlyStopping(rounds=rounds))
        else:
            extra["early_stopping_rounds"] = rounds
    elif rounds:
        metric = (tuning_metrics or eval_metric or [None])[-1]
        if dval is None:
            log.warning("early_stopping_rounds is set but there is no validation channel: no early stopping")
        elif metric is None:
            log.warning("early_stopping_rounds is set without eval_metric: the algorithm does not stop early")
        else:
            callbacks.append(
                xgb.callback.EarlyStopping(
                    rounds=rounds, data_name="validation", metric_name=metric,
                    maximize=metric.split("@")[0] in XGB_MAXIMIZE_METRICS,
                    save_best=params.get("booster") != "gblinear",
                )
            )  # fmt: skip
    if hps.get("save_model_on_termination") == "true" and is_master:
        callbacks.append(_intermediate_saver(lambda m: save_model(m, model_dir, version)))
        signal.signal(signal.SIGTERM, lambda *_: _cleanup_and_exit(model_dir))

    if custom:
        # xgboost >= 1.6 has custom_metric (given predictions), older ones feval (margins from 1.2 on).
        has_custom_metric = "custom_metric" in inspect.signature(xgb.train).parameters
        preds_are_margin = not has_custom_metric and _xgb_version() >= (1, 2)
        metric_fn = container_metric(custom, objective, _vt(version) < (3, 0), preds_are_margin, distributed)
        extra["custom_metric" if has_custom_metric else "feval"] = metric_fn
    if not distributed:
        log.info("Single node training.")
    try:
        bst = xgb.train(
            params, dtrain, num_boost_round=num_round, evals=evals, verbose_eval=False, callbacks=callbacks,
            **extra,
        )  # fmt: skip
    except UserError:
        raise
    except Exception as err:
        text = _xgb_message(err)
        if any(e in str(err) for e in CUSTOMER_ERRORS):
            raise UserError(text) from None
        raise AlgorithmError(f"XGB train call failed with exception: {text}") from None
    if is_master:
        save_model(bst, model_dir, version)
    return bst


def _xgb_message(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.startswith("Stack trace")]
    text = lines[0] if lines else type(err).__name__
    return re.sub(r"^\[\d\d:\d\d:\d\d\] [^\s:]+:\d+: ", "", text)


def save_model(bst, model_dir: str, version: str) -> str:
    """``xgboost-model`` as the image version writes it: a pickled Booster before 1.3-1, else save_model."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, MODEL_NAME)
    if _vt(version) < (1, 3):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(bst, f, protocol=4)
    else:
        tmp = path + ".tmp"  # no .json / .ubj: the installed xgboost's default format, as for "xgboost-model"
        bst.save_model(tmp)
    os.replace(tmp, path)
    return path


def _cleanup_and_exit(model_dir: str) -> None:
    """SIGTERM with save_model_on_termination: keep only the model file(s) and exit 0, as the algorithm."""
    for name in os.listdir(model_dir):
        p = os.path.join(model_dir, name)
        if os.path.isfile(p) and not name.startswith(MODEL_NAME):
            os.remove(p)
    os._exit(0)


# ---------------------------------------------------------------- the job


@dataclass
class Paths:
    hyperparameters: str
    inputdataconfig: str
    resourceconfig: str
    data_dir: str
    model_dir: str
    failure: str

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Paths:
        config = env.get("SM_INPUT_CONFIG_DIR") or f"{ML}/input/config"
        output = env.get("SM_OUTPUT_DIR") or f"{ML}/output"
        return cls(
            hyperparameters=env.get("SM_INPUT_TRAINING_CONFIG_FILE")
            or os.path.join(config, "hyperparameters.json"),
            inputdataconfig=env.get("SM_INPUT_DATA_CONFIG_FILE")
            or os.path.join(config, "inputdataconfig.json"),
            resourceconfig=os.path.join(config, "resourceconfig.json"),
            data_dir=env.get("SM_INPUT_DATA_DIR") or f"{ML}/input/data",
            model_dir=env.get("SM_MODEL_DIR") or f"{ML}/model",
            failure=env.get("SM_OUTPUT_FAILURE") or os.path.join(output, "failure"),
        )

    def channel(self, name: str, env: dict[str, str]) -> str:
        return env.get(f"SM_CHANNEL_{name.upper()}") or os.path.join(self.data_dir, name)


def _read_json(path: str, what: str, default: Any = None) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        if default is not None:
            return default
        raise UserError(f"{what} not found at {path}") from None
    except ValueError as err:
        raise UserError(f"{what} at {path} is not JSON: {err}") from None


def _hosts(paths: Paths, env: dict[str, str]) -> list[str]:
    if env.get("SM_HOSTS"):
        try:
            return list(json.loads(env["SM_HOSTS"]))
        except ValueError:
            pass
    return list(_read_json(paths.resourceconfig, "resourceconfig.json", {}).get("hosts") or ["algo-1"])


# The port of the algorithm's first rabit group (distributed.py: rabit's default, 9099); the training group
# uses the next one. A job's hosts share a private network, so the fixed port cannot collide; tests that run
# hosts as plain processes on this machine pick a free one with MLOPS_XGBOOST_TRACKER_PORT.
TRACKER_PORT = 9099


def _tracker_port() -> int:
    return int(os.environ.get("MLOPS_XGBOOST_TRACKER_PORT") or TRACKER_PORT)


def _resolve(host: str, wait_s: float = 30.0) -> str:
    """The host's address, waiting for it to resolve as the algorithm does while a cluster boots."""
    import socket

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError:
            if time.monotonic() > deadline:
                raise UserError(
                    f"host {host} does not resolve; the hosts of a job must reach each other"
                ) from None
            time.sleep(0.5)


def start_tracker(hosts: list[str], current: str, port: int):
    """The group's tracker, on its first host (None elsewhere). Started before the workers need it: a worker
    that finds no tracker retries after 2, 4, ... s (and probing the port would upset the tracker)."""
    if current != hosts[0]:
        return None
    from xgboost.tracker import RabitTracker

    try:
        tracker = RabitTracker(n_workers=len(hosts), host_ip=_resolve(hosts[0]), port=port, sortby="task")
        tracker.start()
    except Exception as err:
        raise AlgorithmError(
            f"could not start the hosts' tracker at {hosts[0]}:{port}: {_xgb_message(err)}"
        ) from None
    return tracker


def in_group(hosts: list[str], current: str, port: int, fn: Callable[[], Any], tracker=None) -> Any:
    """Runs ``fn`` on every host of ``hosts`` inside one XGBoost communicator group (rabit) whose tracker
    runs on ``hosts[0]`` (``tracker``, or started here); ranks follow the order of ``hosts``."""
    from xgboost import collective

    rank = hosts.index(current)
    if rank == 0 and tracker is None:
        tracker = start_tracker(hosts, current, port)
    args = {
        "dmlc_communicator": "rabit", "dmlc_tracker_uri": _resolve(hosts[0]), "dmlc_tracker_port": port,
        "dmlc_task_id": f"{rank:05d}", "dmlc_retry": 1, "dmlc_timeout": 300,
    }  # fmt: skip
    # Join, retrying every 0.2 s while the tracker is not up yet (XGBoost's own retries wait 2, 4, ... s).
    deadline = time.monotonic() + 120
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # one "Failed to connect" warning per attempt
                collective.init(**args)
            break
        except Exception as err:
            if time.monotonic() > deadline:
                raise AlgorithmError(f"could not join the hosts' group at {hosts[0]}:{port}: {err}") from None
            time.sleep(0.2)
    try:
        result = fn()
    finally:
        collective.finalize()
    if tracker is not None:
        tracker.wait_for()
        tracker.free()
    return result


def _members(hosts: list[str], current: str, include: bool, tracker) -> tuple[list[str], Any]:
    """The hosts that have data, as every host learns it from the others (the algorithm's first group), and
    the training group's tracker, which its first host starts before this group ends."""
    import numpy as np
    from xgboost import collective

    def exchange():
        flags = np.zeros(len(hosts))
        flags[hosts.index(current)] = 1.0 if include else 0.0
        flags = collective.allreduce(flags, collective.Op.SUM)
        members = [h for i, h in enumerate(hosts) if flags[i] > 0]
        second = start_tracker(members, current, _tracker_port() + 1) if len(members) > 1 else None
        return members, second

    return in_group(hosts, current, _tracker_port(), exchange, tracker)


def _current_host(paths: Paths, env: dict[str, str], hosts: list[str]) -> str:
    return (
        env.get("SM_CURRENT_HOST")
        or _read_json(paths.resourceconfig, "resourceconfig.json", {}).get("current_host")
        or hosts[0]
    )


def run(image: str | None = None, env: dict[str, str] | None = None) -> str | None:
    """One training job on this host for ``image`` (a URI or tag; None: see
    :func:`version_for_installed_xgboost`); returns the model path (None on a host that writes no model).
    Raises UserError / AlgorithmError."""
    env = dict(os.environ if env is None else env)
    paths = Paths.from_env(env)
    log.info("Running XGBoost Sagemaker in algorithm mode")
    image_version = framework_version(image) if image else version_for_installed_xgboost()
    hps = validate_hyperparameters(_read_json(paths.hyperparameters, "hyperparameters.json"), image_version)
    channels = validate_channels(_read_json(paths.inputdataconfig, "inputdataconfig.json"))
    for name, why in (
        ("_kfold", "cross-validation (_kfold)"),
        ("use_dask_gpu_training", "Dask GPU training (use_dask_gpu_training)"),
    ):
        if name in hps and hps[name] != "false":
            raise UserError(f"{why} is not supported by the local XGBoost algorithm")
    hosts = _hosts(paths, env)
    current = _current_host(paths, env, hosts)
    if current not in hosts:
        raise UserError(f"current host {current} is not one of the job's hosts {hosts}")
    fmt = _FORMAT_OF[channels["train"]["ContentType"]]  # for validation too (data_utils: "assumes the same")
    csv_weights = hps.get("csv_weights", 0)
    train_path = paths.channel("train", env)
    val_path = paths.channel("validation", env) if "validation" in channels else None
    if val_path is not None:
        _warn_same_files(train_path, val_path)
    first_tracker = start_tracker(hosts, current, _tracker_port()) if len(hosts) > 1 else None
    train_data = read_channel(train_path, fmt, csv_weights)
    val_data = None
    if val_path is not None:
        val_data = read_channel(val_path, fmt, csv_weights)  # the train channel's type, as the algorithm
    num_gpus = int(env.get("SM_NUM_GPUS") or 0)
    model = os.path.join(paths.model_dir, MODEL_NAME)
    version = framework_version(image) if image else version_for_installed_xgboost()
    log.info(
        "Image version %s%s; xgboost %s (%s)", version, "" if image else " (no --image given)",
        _xgb_module().__version__, sys.executable,
    )  # fmt: skip

    def single():
        if train_data is None:
            raise UserError(f"No data in training channel path {train_path}")
        if val_path is not None and val_data is None:
            raise UserError(f"No data in validation channel path {val_path}")
        train(hps, train_data, val_data, version, paths.model_dir, num_gpus)
        log.info("Stored trained model at %s", model)
        return model

    if len(hosts) == 1:
        return single()
    # Across hosts, as the algorithm does: a host without training (or, given the channel, validation) data
    # leaves the group; the others train together, the first of them is the master and writes the model.
    log.info("Distributed node training with %d hosts: %s", len(hosts), hosts)
    if _xgb_version() < (2, 0):
        raise UserError(
            f"training across {len(hosts)} hosts needs xgboost 2.0 or later in the job's environment "
            f"(found {_xgb_module().__version__}); set InstanceCount to 1"
        )
    include = train_data is not None and (val_path is None or val_data is not None)
    if not include:
        log.warning(
            "Host %s does not have %s data. Will broadcast to cluster and this host %s will not be used in "
            "distributed training.", current, "training" if train_data is None else "validation", current,
        )  # fmt: skip
    members, tracker = _members(hosts, current, include, first_tracker)
    if current not in members:
        log.warning("Host %s not being used for distributed training.", current)
        return None
    if len(members) == 1:
        return single()
    is_master = current == members[0]
    in_group(
        members, current, _tracker_port() + 1, tracker=tracker, fn=
        lambda: train(
            hps, train_data, val_data, version, paths.model_dir, num_gpus, is_master=is_master, distributed=True
        ),
    )  # fmt: skip
    if not is_master:
        return None
    log.info("Stored trained model at %s", model)
    return model


# ---------------------------------------------------------------- serving

SERVING_PORT = 8080
PKL_FORMAT, XGB_FORMAT = "pkl_format", "xgb_format"  # serve_utils.py's names for the two model formats
_FORMAT_WORDS = {PKL_FORMAT: "pickled Booster", XGB_FORMAT: "Booster.load_model"}
# algorithm_mode/serve.py
SUPPORTED_ACCEPTS = [
    "application/json",
    "application/jsonlines",
    "application/x-recordio-protobuf",
    "text/csv",
]
DEFAULT_MAX_CONTENT_LENGTH = (
    6291456  # MAX_CONTENT_LENGTH's default (6 MiB); 1.0-1 .. 1.2-1 capped it at 20 MiB
)
_HTML = "text/html; charset=utf-8"  # what a flask.Response without a mimetype says (the container's errors)

# Selectable inference content (SAGEMAKER_INFERENCE_OUTPUT; algorithm_mode/serve_utils.py): the keys each
# objective can give; any other selected key comes back as NaN.
PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES = (
    "predicted_label",
    "labels",
    "probability",
    "probabilities",
)
RAW_SCORE, RAW_SCORES, PREDICTED_SCORE = "raw_score", "raw_scores", "predicted_score"
_CLASSIFICATION_KEYS = [PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES, RAW_SCORE, RAW_SCORES]
_SCORE_KEYS = [PREDICTED_LABEL, LABELS, RAW_SCORE, RAW_SCORES]
SELECTABLE_CONTENT = {
    "reg:squarederror": [PREDICTED_SCORE], "reg:logistic": [PREDICTED_SCORE], "reg:gamma": [PREDICTED_SCORE],
    "reg:absoluteerror": [PREDICTED_SCORE], "reg:tweedie": [PREDICTED_SCORE],
    "binary:logistic": _CLASSIFICATION_KEYS, "binary:logitraw": _SCORE_KEYS, "binary:hinge": _SCORE_KEYS,
    "multi:softmax": _SCORE_KEYS, "multi:softprob": _CLASSIFICATION_KEYS,
}  # fmt: skip


class ServeError(Exception):
    """A request the server answers with ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())


def _parse_header(value: str) -> tuple[str, dict[str, str]]:
    """``cgi.parse_header`` (gone in Python 3.13): the media type and its ``;``-parameters."""
    parts = value.split(";")
    params = {}
    for part in parts[1:]:
        if "=" in part:
            key, _, val = part.partition("=")
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            params[key.strip().lower()] = val
    return parts[0].strip(), params


def _accept_features(version: str) -> bool:
    """Whether the image answers in the request's Accept type (1.2-2 on); before, text/csv only."""
    return _vt(version) >= (1, 2, 2)


@dataclass
class ServingModel:
    """The booster(s) the endpoint serves: one, or an ensemble of every file in the model dir (1.2-2 on)."""

    boosters: list
    formats: list[str]
    paths: list[str]
    objective: str
    num_class: str
    num_features: int | None

    def __post_init__(self):
        import threading

        # One prediction at a time: the container runs one model per worker process because XGBoost's
        # predict was not thread-safe (serve.py post_worker_init); here threads share the model.
        self.lock = threading.Lock()


def _model_files(model_dir: str, ensemble: bool) -> list[str]:
    """The model dir's files as the container picks them: every regular file but dotfiles (sorted here; the
    container takes os.listdir's order), or only the first, ``xgboost-model`` first when there."""
    try:
        names = sorted(os.listdir(model_dir))
    except OSError as err:
        raise UserError(
            f"no model to serve: cannot read the model directory {model_dir}: {err.strerror}"
        ) from None
    files = []
    for name in names:
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            continue
        if name.startswith("."):
            log.warning(
                "Ignoring dotfile '%s' found in model directory - please exclude dotfiles from model archives",
                path,
            )
            continue
        files.append(path)
    if not files:
        raise UserError(f"no model to serve: the model directory {model_dir} has no model file")
    if not ensemble:
        preferred = os.path.join(model_dir, MODEL_NAME)
        files = [preferred] if preferred in files else files[:1]
    return files


def _load_booster(path: str, version: str):
    """One model file: the format the image version writes first (a pickle before 1.3-1), then the other."""
    import xgboost as xgb

    order = [PKL_FORMAT, XGB_FORMAT] if _vt(version) < (1, 3) else [XGB_FORMAT, PKL_FORMAT]
    errors = []
    for fmt in order:
        try:
            if fmt == PKL_FORMAT:
                with open(path, "rb") as f:
                    bst = pickle.load(f)
                if not isinstance(bst, xgb.Booster):
                    raise TypeError(f"it holds a {type(bst).__name__}, not an xgboost Booster")
            else:
                bst = xgb.Booster()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # 2.1+: "guessing UBJSON" for a name without an extension
                    bst.load_model(path)
            return bst, fmt
        except Exception as err:
            errors.append(
                f"{'pickle.load' if fmt == PKL_FORMAT else 'Booster.load_model'}: {_xgb_message(err)}"
            )
    raise UserError(f"Model {path} cannot be loaded: {'; '.join(errors)}")


def load_serving_model(model_dir: str, version: str, ensemble: bool = True) -> ServingModel:
    """The model(s) ``serve`` answers with; raises UserError when the dir holds no loadable model."""
    ensemble = ensemble and _accept_features(version)  # SAGEMAKER_INFERENCE_ENSEMBLE arrived with 1.2-2
    boosters, formats, paths = [], [], _model_files(model_dir, ensemble)
    for path in paths:
        bst, fmt = _load_booster(path, version)
        bst.set_param("nthread", 1)  # as serve_utils.get_loaded_booster
        boosters.append(bst)
        formats.append(fmt)
    try:
        learner = json.loads(boosters[0].save_config())["learner"]
    except AttributeError:  # xgboost before 1.0 (the 0.90 images) has no save_config: objective unknown
        learner = {}
    try:
        num_features = int(boosters[0].num_features())
    except Exception:  # xgboost before 1.0 has no num_features()
        num_features = len(boosters[0].feature_names) if boosters[0].feature_names else None
    return ServingModel(
        boosters=boosters,
        formats=formats,
        paths=paths,
        objective=learner.get("objective", {}).get("name", "unknown"),
        num_class=str(learner.get("learner_model_param", {}).get("num_class", "")),
        num_features=num_features,
    )


def _request_format(content_type: str | None) -> str:
    """The request's data format (data_utils.get_content_type): no Content-Type means libsvm."""
    if content_type is None:
        return LIBSVM
    media, params = _parse_header(content_type.lower())
    if media in (CSV, "text/csv"):
        if params.get("label_size", "1") != "1":
            raise ServeError(
                415,
                f"{content_type} is not an accepted csv ContentType. Optional parameter label_size must be equal to 1",
            )
        return CSV
    if media in (LIBSVM, "text/libsvm", "text/x-libsvm"):
        return LIBSVM
    if media in (RECORDIO, "application/x-recordio-protobuf"):
        raise ServeError(
            415,
            f"Content-type {content_type}: recordio-protobuf requests are not supported by the local XGBoost "
            "algorithm; send text/csv or text/libsvm",
        )
    raise ServeError(415, f"Content-type {content_type} is not supported.")


def parse_payload(payload: bytes, content_type: str | None):
    """The request body as a DMatrix, as the container decodes it (serve_utils.parse_content_data,
    encoder.csv_to_dmatrix, serve_utils._get_sparse_matrix_from_libsvm); returns (dmatrix, format)."""
    import numpy as np
    import xgboost as xgb

    fmt = _request_format(content_type)
    try:
        text = payload.strip().decode("utf-8")
        if fmt == CSV:
            # The delimiter is sniffed from the first line's first 512 characters; a letter or digit (what
            # the sniffer finds in a single column, e.g. "5" in "1.5") means ",". Empty fields are missing.
            delimiter = csv.Sniffer().sniff(text.split("\n")[0][:512]).delimiter
            delimiter = "," if delimiter.isalnum() else delimiter
            rows = [["nan" if v == "" else v for v in line.split(delimiter)] for line in text.split("\n")]
            widths = sorted({len(r) for r in rows})
            if len(widths) > 1:
                raise ValueError(f"rows have different numbers of fields: {widths}")
            return xgb.DMatrix(np.array(rows).astype(float)), fmt
        # libsvm: "<label> <index>:<value> ..." per line; the label (or anything without a colon) is ignored
        # and indices are taken as given.
        from scipy.sparse import csr_matrix

        row, col, data = [], [], []
        for i, line in enumerate(text.split("\n")):
            for item in line.split(" "):
                if ":" in item:
                    parts = item.split(":")
                    row.append(i)
                    col.append(parts[0])
                    data.append(parts[1])
        matrix = csr_matrix((np.array(data).astype(float), (np.array(row), np.array(col).astype(int))))
        return xgb.DMatrix(matrix), fmt
    except Exception as err:
        word = "csv" if fmt == CSV else "libsvm"
        raise ServeError(
            415,
            f"Loading {word} data failed with Exception, please ensure data is in {word} format: {type(err)} "
            f"{_xgb_message(err)}",
        ) from None


def _predict_one(bst, fmt: str, dmatrix):
    kwargs: dict[str, Any] = {"validate_features": False}
    best = bst.attr("best_iteration") if fmt == PKL_FORMAT else None
    if best is not None:
        # The container predicts with getattr(bst, "best_ntree_limit", 0): only a pickled Booster carries
        # that attribute (xgb.train sets it after early stopping), so a pickle trained with early stopping
        # predicts with its best iteration's trees.
        if "iteration_range" in inspect.signature(bst.predict).parameters:
            kwargs["iteration_range"] = (0, int(best) + 1)
        else:
            kwargs["ntree_limit"] = getattr(bst, "best_ntree_limit", 0)
    return bst.predict(dmatrix, **kwargs)


def predict(model: ServingModel, dmatrix, fmt: str):
    """serve_utils.predict: the pickled-model feature-count check, then the booster's (or the ensemble's
    mean, or vote for multi:softmax and binary:hinge) predictions."""
    import numpy as np

    if model.formats[0] == PKL_FORMAT and model.num_features is not None:
        x, y = model.num_features, dmatrix.num_col()
        if fmt == LIBSVM and y > x + 1:
            raise ServeError(
                400,
                f"Unable to evaluate payload provided: Feature size of libsvm inference data {y} is larger than "
                f"feature size of trained model {x}.",
            )
        if fmt == CSV and x not in (y, y + 1):
            raise ServeError(
                400,
                f"Unable to evaluate payload provided: Feature size of csv inference data {y} is not consistent "
                f"with feature size of trained model {x}.",
            )
    try:
        with model.lock:
            preds = [_predict_one(b, model.formats[i], dmatrix) for i, b in enumerate(model.boosters)]
    except Exception as err:
        raise ServeError(400, f"Unable to evaluate payload provided: {_xgb_message(err)}") from None
    if len(preds) == 1:
        return preds[0]
    stacked = np.stack(preds)
    if model.objective in ("multi:softmax", "binary:hinge"):  # scipy.stats.mode: the smallest most common
        out = np.empty(stacked.shape[1:], dtype=stacked.dtype)
        for j in np.ndindex(*stacked.shape[1:]):
            values, counts = np.unique(stacked[(slice(None),) + j], return_counts=True)
            out[j] = values[np.argmax(counts)]
        return out
    return np.mean(stacked, axis=0)


def _selected_content(preds, keys: list[str], objective: str, num_class: str) -> list[dict]:
    """serve_utils.get_selected_predictions: one dict per record with the selected keys."""
    if objective not in SELECTABLE_CONTENT:
        raise ServeError(500, f"Objective `{objective}` unsupported for selectable inference predictions.")
    valid = [k for k in SELECTABLE_CONTENT[objective] if k in keys]
    invalid = [k for k in dict.fromkeys(keys) if k not in SELECTABLE_CONTENT[objective]]
    if invalid:
        log.warning(
            "Selected key(s) %s incompatible for objective '%s'. Please use list of compatible selectable "
            "inference predictions: %s", invalid, objective, SELECTABLE_CONTENT[objective],
        )  # fmt: skip
    softprob, nan = objective == "multi:softprob", float("nan")
    out = []
    for raw in preds:
        if softprob:
            row = [float(v) for v in raw]
            top = max(row)
        else:
            value = float(raw.item() if hasattr(raw, "item") else raw)
        item: dict[str, Any] = {}
        for key in valid:
            if key == PREDICTED_LABEL:
                if softprob:
                    item[key] = int(row.index(top))
                elif objective == "binary:logistic":
                    item[key] = int(value > 0.5)
                elif objective == "binary:logitraw":
                    item[key] = int(value > 0)
                else:  # binary:hinge, multi:softmax
                    item[key] = value
            elif key == LABELS:
                if objective.startswith("binary:"):
                    item[key] = [0, 1]
                elif objective.startswith("multi:") and num_class:
                    item[key] = list(range(int(num_class)))
                else:
                    item[key] = nan
            elif key in (PROBABILITY, RAW_SCORE):
                item[key] = top if softprob else value
            elif key in (PROBABILITIES, RAW_SCORES):
                item[key] = row if softprob else [1.0 - value, value]
            elif key == PREDICTED_SCORE:
                item[key] = value
        for key in invalid:
            item[key] = nan
        out.append(item)
    return out


def _jsonlines(entries: list) -> str:
    return "".join(json.dumps(e) + "\n" for e in entries)


def _csv_field(value: Any) -> str:
    return f'"{value}"' if isinstance(value, list) else str(value)


class ServingApp:
    """The image's Flask app (algorithm_mode/serve.py) without Flask: routes, statuses and bodies."""

    def __init__(self, model: ServingModel, version: str, env: dict[str, str]):
        self.model = model
        self.version = version
        self.batch = bool(env.get("SAGEMAKER_BATCH"))
        self.default_accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")
        self.selected = None  # SAGEMAKER_INFERENCE_OUTPUT, from 1.0-1 on
        if "SAGEMAKER_INFERENCE_OUTPUT" in env and _vt(version) >= (1, 0):
            self.selected = env["SAGEMAKER_INFERENCE_OUTPUT"].replace(" ", "").lower().split(",")
        limit = int(env.get("MAX_CONTENT_LENGTH") or DEFAULT_MAX_CONTENT_LENGTH)
        self.max_content_length = limit if _accept_features(version) else min(limit, 20 * 1024**2)

    def execution_parameters(self) -> tuple[int, str, bytes]:
        body = {
            "MaxConcurrentTransforms": os.cpu_count() or 1, "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": int(self.max_content_length / (1024**2)),
        }  # fmt: skip
        return 200, "application/json", json.dumps(body).encode()

    def accept(self, header: str | None) -> str:
        """serve._parse_accept: none or ``*/*`` is SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT (text/csv)."""
        media, _ = _parse_header(header or "")
        if not media or media == "*/*":
            return self.default_accept
        if media.lower() not in SUPPORTED_ACCEPTS:
            raise ServeError(
                406,
                f"Accept type {media} is not supported. Please use supported accept types: {SUPPORTED_ACCEPTS}.",
            )
        return media.lower()

    def invocations(
        self, payload: bytes, content_type: str | None, accept: str | None
    ) -> tuple[int, str, bytes]:
        """The order of serve.invocations: empty (204), decode (415), predict (400), Accept (406), encode."""
        if not payload:
            return 204, _HTML, b""
        dmatrix, fmt = parse_payload(payload, content_type)
        preds = predict(self.model, dmatrix, fmt)
        if not _accept_features(self.version) and self.selected is None:
            body = (
                ("\n".join(map(str, preds.tolist())) + "\n")
                if self.batch
                else ",".join(map(str, preds.tolist()))
            )
            return 200, "text/csv; charset=utf-8", body.encode()
        media = self.accept(accept)
        if media == "application/x-recordio-protobuf" and self.selected is not None:
            raise ServeError(
                406, "Accept application/x-recordio-protobuf is not supported by the local XGBoost algorithm"
            )
        mimetype = media + ("; charset=utf-8" if media.startswith("text/") else "")
        if self.selected is not None:
            return 200, mimetype, self._selected_response(preds, media).encode()
        preds_list = preds.tolist()
        if self.batch:
            body = "\n".join(map(str, preds_list)) + "\n"
        elif media == "application/json":
            body = json.dumps({"predictions": [{"score": p} for p in preds_list]})
        elif media == "text/csv":  # sagemaker-containers' array_to_csv: a row per record
            body = "".join(",".join(map(repr, r if isinstance(r, list) else [r])) + "\n" for r in preds_list)
        else:  # sagemaker-containers' encoders.encode has no encoder for it: an error the app does not catch
            raise ServeError(500, f"Content type {media} is not supported by this framework.")
        return 200, mimetype, body.encode()

    def _selected_response(self, preds, media: str) -> str:
        keys = self.selected or []
        content = _selected_content(preds, keys, self.model.objective, self.model.num_class)
        if media == "application/json":
            return json.dumps({"predictions": content})
        if media == "application/jsonlines":
            return _jsonlines(content)
        if media == "text/csv":
            text = "\n".join(",".join(_csv_field(item[k]) for k in keys) for item in content)
            return text + "\n" if self.batch else text
        raise ServeError(500, f"Cannot encode selected predictions into accept type '{media}'.")


def _container_http():
    """The shared HTTP side (``container_http.py``), loaded from beside this file: in a container both are
    mounted side by side, and this script imports nothing of the toolkit."""
    import importlib.util

    module = sys.modules.get("container_http")
    if module is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "container_http.py")
        spec = importlib.util.spec_from_file_location("container_http", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["container_http"] = module
        spec.loader.exec_module(module)
    return module


def _handler_class(app: ServingApp, nodelay: bool = True):
    http = _container_http()
    routes = {"/ping": "GET", "/execution-parameters": "GET", "/invocations": "POST"}

    def answer(path, headers, read_body):
        if path == "/ping":  # the model is loaded before the server starts
            return 200, _HTML, b""
        if path == "/execution-parameters":
            return app.execution_parameters()
        try:
            payload = read_body()
            return app.invocations(payload, headers.get("Content-Type"), headers.get("Accept"))
        except ServeError as err:
            raise http.HttpError(err.status, err.message) from None

    def done(method, path, status, message, size, ms):
        if message is not None:
            log.info("%s %s %d: %s", method, path, status, message)
        elif path == "/invocations":
            log.info("%s %s %d (%d bytes, %.0f ms)", method, path, status, size, ms)

    limit = app.max_content_length
    return http.handler_class(
        http.routed(routes, answer), name="sagemaker-xgboost-local", limit=limit,
        too_large=f"Request Entity Too Large: the payload is larger than MAX_CONTENT_LENGTH ({limit} bytes)",
        error_type=_HTML, log=log, nodelay=nodelay, on_done=done,
    )  # fmt: skip


def serve(image: str | None = None, env: dict[str, str] | None = None) -> int:
    """The image's ``serve``: loads the model, answers /ping and /invocations on SAGEMAKER_BIND_TO_PORT (and
    the Unix socket MLOPS_SERVING_SOCKET names) until SIGTERM, then returns 0. Raises UserError when there is
    no model to serve or nowhere to listen."""
    import threading

    env = dict(os.environ if env is None else env)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    version = framework_version(image) if image else version_for_installed_xgboost()
    model_dir = env.get("SM_MODEL_DIR") or f"{ML}/model"
    # SAGEMAKER_MODEL_SERVER_WORKERS / SAGEMAKER_MODEL_SERVER_TIMEOUT size gunicorn in the image: one
    # threaded server here.
    ensemble = env.get("SAGEMAKER_INFERENCE_ENSEMBLE", "true") == "true"
    model = load_serving_model(model_dir, version, ensemble)
    log.info(
        "model loaded: %s (%s; image %s, xgboost %s); objective %s, %s features", ", ".join(model.paths),
        ", ".join(sorted({_FORMAT_WORDS[f] for f in model.formats})), version, _xgb_module().__version__,
        model.objective, model.num_features,
    )  # fmt: skip
    port = int(env.get("SAGEMAKER_BIND_TO_PORT") or SERVING_PORT)
    socket_path = env.get("MLOPS_SERVING_SOCKET") or None
    http = _container_http()
    app = ServingApp(model, version, env)
    try:
        servers = http.listen(lambda nodelay: _handler_class(app, nodelay), port, socket_path)
    except http.ListenError as err:
        raise UserError(str(err)) from None
    log.info("listening on 0.0.0.0:%d%s", port, f" and unix:{socket_path}" if socket_path else "")
    http.serve_until(stop, servers, socket_path, log)
    return 0


def _write_failure(path: str, message: str) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(message)
    except OSError as err:
        log.error("could not write the failure file %s: %s", path, err)


def _setup_logging(stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s:%(levelname)s] %(message)s", "%Y-%m-%d:%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)

    def show(message, category, filename, lineno, file=None, line=None):
        log.warning("%s", " ".join(str(message).split()))

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xgboost_algorithm", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["train", "serve"])
    parser.add_argument(
        "--image",
        default=None,
        help="the job's image URI or its tag: the model format and XGBoost defaults follow its version "
        f"(default: the image of the installed xgboost if older than 2.0, else {DEFAULT_VERSION})",
    )
    args = parser.parse_args(argv)
    # serve logs to stderr and writes no files; train logs to stdout, where the job's log reads it
    _setup_logging(sys.stderr if args.command == "serve" else sys.stdout)
    # xgboost imports scikit-learn when it can (xgboost/compat.py, for its sklearn wrappers, unused here);
    # that alone takes seconds on a small instance. The algorithm's own metrics do not need it.
    if "sklearn" not in sys.modules:
        sys.modules["sklearn"] = None  # type: ignore[assignment]
    env = dict(os.environ)
    if args.command == "serve":
        try:
            return serve(args.image, env)
        except Exception as err:  # UserError: no model, nowhere to listen; anything else, named
            text = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
            log.error("%s", " ".join(text.split()))
            return 1
    paths = Paths.from_env(env)
    try:
        run(args.image, env)
    except UserError as err:
        message = " ".join(str(err).split())
        log.error("%s", message)
        _write_failure(paths.failure, message)
        return 1
    except Exception as err:  # the container reports these as framework errors
        log.exception("Reporting training FAILURE")
        message = " ".join(f"AlgorithmError: {err}".split()) if isinstance(err, AlgorithmError) else (
            " ".join(f"AlgorithmError: {type(err).__name__}: {err}".split()))  # fmt: skip
        _write_failure(paths.failure, message[:1024])
        return 1
    try:  # sagemaker-containers writes an empty success file (output/success)
        os.makedirs(os.path.dirname(paths.failure), exist_ok=True)
        with open(os.path.join(os.path.dirname(paths.failure), "success"), "w"):
            pass
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
