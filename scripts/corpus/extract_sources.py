#!/usr/bin/env python
"""Copy each entry's upstream files, as they are, into tests/corpus/<name>/source/ (provenance step).

    python scripts/corpus/extract_sources.py [--mirrors /work/.mirror] [NAME...]

It reads the public repositories' git snapshots (``<mirrors>/<owner>+<repo>/repo``, bare git dirs) at the
commits pinned below. A file is either a path in the repository or the body of a notebook cell that
starts with ``%%writefile <name>`` (the file the notebook writes before building its pipeline; IPython
writes the cell body after the magic line, and a final newline is added when the cell lacks one).
``build.py`` only needs the copies this writes; it never reads the mirrors.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"

EXAMPLES = ("aws/amazon-sagemaker-examples", "2d519b52c3a2c2361f2b87f0d3de46fd6c0232a5")
SDK_V2 = ("aws/sagemaker-python-sdk", "fc582aaa46faf7b7e16ab1e13840869712174cd0")  # branch master-v2
SDK_V3 = ("aws/sagemaker-python-sdk", "a24812666d258d9d19c9a82d0c9385ca0bd3ba01")  # branch master
TEMPLATES = ("aws-samples/sagemaker-custom-project-templates", "6906ed9046ace27f7f40c8eaff1248bb9cf46d08")

# The examples repository files its notebooks under folders whose names start with spaces.
ML_OPS = "   ml_ops"
SEEDCODE = "mlops-template-gitlab/seedcode/mlops-gitlab-project-seedcode-model-build"


def nb(path: str, target: str) -> str:
    return f"notebook:{path}#{target}"


SOURCES: dict[str, tuple[tuple[str, str], dict[str, str]]] = {
    "examples-abalone-batch-transform": (EXAMPLES, {
        "code/preprocessing.py": nb(f"{ML_OPS}/sm-pipelines_preprocess_train_evaluate_batch_transform/"
                                    "sm-pipelines_preprocess_train_evaluate_batch_transform.ipynb",
                                    "code/preprocessing.py"),
        "code/evaluation.py": nb(f"{ML_OPS}/sm-pipelines_preprocess_train_evaluate_batch_transform/"
                                 "sm-pipelines_preprocess_train_evaluate_batch_transform.ipynb",
                                 "code/evaluation.py"),
    }),
    "projects-modelbuild-abalone": (TEMPLATES, {
        "pipelines/__init__.py": f"{SEEDCODE}/pipelines/__init__.py",
        "pipelines/abalone/__init__.py": f"{SEEDCODE}/pipelines/abalone/__init__.py",
        "pipelines/abalone/pipeline.py": f"{SEEDCODE}/pipelines/abalone/pipeline.py",
        "pipelines/abalone/preprocess.py": f"{SEEDCODE}/pipelines/abalone/preprocess.py",
        "pipelines/abalone/evaluate.py": f"{SEEDCODE}/pipelines/abalone/evaluate.py",
    }),
    "sdkv2-integ-pytorch-conditional-register": (SDK_V2, {
        "mnist.py": "tests/data/pytorch_mnist/mnist.py",
    }),
    "examples-tensorflow-pipelinemodel-register": (EXAMPLES, {
        f"code/{name}": nb(f"{ML_OPS}/sm-pipelines_train_model_registry_deploy.ipynb", f"code/{name}")
        for name in ("preprocess.py", "train.py", "evaluate.py")
    }),
    "examples-sklearn-classic-training-step-decorator": (EXAMPLES, {
        "dummy_train.py": nb(f"{ML_OPS}/sm-pipelines_step_decorator_with_classic_training_step/"
                             "sm-pipelines_step_decorator_with_classic_training_step.ipynb", "dummy_train.py"),
        "config.yaml": f"{ML_OPS}/sm-pipelines_step_decorator_with_classic_training_step/config.yaml",
        "requirements.txt": f"{ML_OPS}/sm-pipelines_step_decorator_with_classic_training_step/requirements.txt",
    }),
    "examples-tuning-step": (EXAMPLES, {
        f"code/{name}": nb(f"{ML_OPS}/sm-pipelines_hyperparameter_tuning.ipynb", f"code/{name}")
        for name in ("preprocess.py", "evaluate.py")
    }),
    "examples-lambda-step": (EXAMPLES, {
        f"code/{name}": nb(f"{ML_OPS}/sm-pipelines_lambda_step/sm-pipelines_lambda_step.ipynb", f"code/{name}")
        for name in ("preprocess.py", "evaluate.py", "lambda_helper.py")
    } | {"iam_helper.py": f"{ML_OPS}/sm-pipelines_lambda_step/iam_helper.py"}),
    "examples-clarify-quality-checks": (EXAMPLES, {
        f"code/{name}": nb(f"{ML_OPS}/sm-pipelines_clarify_model_monitor_integration/"
                           "sm-pipelines_clarify_model_monitor_integration.ipynb", f"code/{name}")
        for name in ("preprocess.py", "evaluate.py")
    }),
    "examples-callback-step": (EXAMPLES, {}),
    "examples-emr-step": (EXAMPLES, {
        f"code/{name}": nb(f"{ML_OPS}/sm-pipelines_emr_step_with_running_emr_cluster.ipynb", f"code/{name}")
        for name in ("preprocess.py", "evaluate.py")
    }),
    "sdkv3-integ-train-registry": (SDK_V3, {
        "code/pipeline/preprocess.py": "sagemaker-mlops/tests/integ/code/pipeline/preprocess.py",
    }),
    "sdkv3-example-tuning-pytorch": (SDK_V3, {
        "mnist.py": "v3-examples/ml-ops-examples/v3-hyperparameter-tuning-example/mnist.py",
    }),
}  # fmt: skip


def git_show(git_dir: Path, commit: str, path: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], check=True, capture_output=True
    ).stdout


def writefile_cell(notebook: bytes, target: str) -> bytes:
    cells = json.loads(notebook)["cells"]
    for cell in cells:
        text = "".join(cell["source"])
        first, _, body = text.partition("\n")
        if cell["cell_type"] == "code" and first.split()[:2] == ["%%writefile", target]:
            return (body if body.endswith("\n") else body + "\n").encode()
    raise SystemExit(f"no '%%writefile {target}' cell in the notebook")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*")
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    args = parser.parse_args(argv)
    for name in args.names or SOURCES:
        (repo, commit), files = SOURCES[name]
        git_dir = args.mirrors / repo.replace("/", "+") / "repo"
        for target, spec in files.items():
            if spec.startswith("notebook:"):
                path, _, cell_target = spec[len("notebook:") :].partition("#")
                content = writefile_cell(git_show(git_dir, commit, path), cell_target)
            else:
                content = git_show(git_dir, commit, spec)
            out = CORPUS / name / "source" / target
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(content)
            print(f"{name}/source/{target}  <-  {repo}@{commit[:12]}:{spec.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
