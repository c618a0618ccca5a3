"""Evaluate (SageMaker Processing job): score the test split with the model's own serving code.

Container contract: reads /opt/ml/processing/input/model/model.tar.gz and
/opt/ml/processing/input/test/*.csv; writes /opt/ml/processing/evaluation/evaluation.json in SageMaker's
model-quality format (multiclass_classification_metrics), which the pipeline's condition step reads.
The model is scored through ``code/inference.py`` from the tarball (model_fn/input_fn/predict_fn), so
evaluation exercises exactly what the endpoint will serve.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

MODEL_TAR = Path("/opt/ml/processing/input/model/model.tar.gz")
TEST_DIR = Path("/opt/ml/processing/input/test")
OUTPUT = Path("/opt/ml/processing/evaluation/evaluation.json")
LABEL = "label"
CLASSES = list(range(10))
BATCH_ROWS = 5_000


def load_handlers(model_dir: Path):
    """Import the tarball's code/inference.py as a module."""
    path = model_dir / "code" / "inference.py"
    if not path.is_file():
        raise SystemExit(f"{MODEL_TAR} has no code/inference.py: not a model packaged by the train step")
    spec = importlib.util.spec_from_file_location("model_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predict(handlers, model, features: np.ndarray) -> np.ndarray:
    """Labels for all rows, sent through input_fn as CSV in batches like endpoint requests."""
    labels = []
    for start in range(0, len(features), BATCH_ROWS):
        chunk = features[start : start + BATCH_ROWS]
        body = "\n".join(",".join(str(v) for v in row) for row in chunk.tolist())
        tensor = handlers.input_fn(body, "text/csv")
        labels.append(handlers.predict_fn(tensor, model).argmax(dim=1).numpy())
        print(f"scored {min(start + BATCH_ROWS, len(features))} of {len(features)} rows", flush=True)
    return np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)


def metrics(truth: np.ndarray, predicted: np.ndarray) -> dict:
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, labels=CLASSES, average="weighted", zero_division=0
    )
    matrix = confusion_matrix(truth, predicted, labels=CLASSES)

    def value(v: float) -> dict:
        return {"value": float(v), "standard_deviation": "NaN"}

    return {
        "multiclass_classification_metrics": {
            "accuracy": value(accuracy_score(truth, predicted)),
            "weighted_f1": value(f1),
            "weighted_precision": value(precision),
            "weighted_recall": value(recall),
            # SageMaker's layout: outer key = actual class, inner key = predicted class.
            "confusion_matrix": {
                str(actual): {str(pred): int(matrix[i, j]) for j, pred in enumerate(CLASSES)}
                for i, actual in enumerate(CLASSES)
            },
        }
    }


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    files = sorted(TEST_DIR.glob("*.csv"))
    if not files:
        raise SystemExit(f"no test CSV files in {TEST_DIR}")
    test = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    print(f"read {len(test)} test rows from {len(files)} file(s)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(MODEL_TAR) as tar:
            tar.extractall(tmp, filter="data")
        handlers = load_handlers(Path(tmp))
        model = handlers.model_fn(tmp)
        truth = test[LABEL].to_numpy(dtype=np.int64)
        predicted = predict(handlers, model, test.drop(columns=[LABEL]).to_numpy())

    report = metrics(truth, predicted)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=".evaluation.", suffix=".tmp", dir=OUTPUT.parent)
    with os.fdopen(fd, "w") as out:
        json.dump(report, out, indent=2)
    os.replace(tmp_path, OUTPUT)
    accuracy = report["multiclass_classification_metrics"]["accuracy"]["value"]
    print(f"accuracy={accuracy:.4f} on {len(truth)} test rows; wrote {OUTPUT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
