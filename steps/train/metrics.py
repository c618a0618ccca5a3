"""Metric regexes for the training job: SageMaker (and the local executor) scan rank 0's log with them.

They match the one line train.py prints per epoch, e.g.
``epoch=3 train_loss=0.1234 validation_loss=0.2345 validation_accuracy=0.9612``.
"""

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf)"

METRIC_DEFINITIONS = [
    {"Name": "train:loss", "Regex": rf"train_loss={_NUMBER}"},
    {"Name": "validation:loss", "Regex": rf"validation_loss={_NUMBER}"},
    {"Name": "validation:accuracy", "Regex": rf"validation_accuracy={_NUMBER}"},
]
