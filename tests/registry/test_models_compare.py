"""``mlops models compare`` and the duplicate-registration warning, on real local runs of a small pipeline.

The pipeline (Train -> Evaluate -> Register) is hand-written so that a run takes seconds, not the project's
60-90 s: a real Training job (a ``python3`` script over its ``train`` channel) whose model is a number
derived from the data, a real Processing job that scores it, and RegisterModel. The module runs it three
times in one home: over data A, over data B, and over data B again (Train is a cache hit, so the same
artifact is registered a second time).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from mlops.cli.main import main
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home
from tests.project import ROOT as PROJECT_ROOT

GROUP = "tiny"
ROLE = "arn:aws:iam::123456789012:role/PipelineRole"
DATA_A, DATA_B = "s3://b/data/a/", "s3://b/data/b/"

TRAIN = """
import json, os, pathlib
root = pathlib.Path("/opt/ml/input/data/train")
values = [float(v) for f in sorted(root.rglob("*.csv")) for v in f.read_text().split(",") if v.strip()]
epochs = int(json.load(open("/opt/ml/input/config/hyperparameters.json"))["epochs"])
pathlib.Path(os.environ["SM_MODEL_DIR"], "model.json").write_text(json.dumps({"mean": sum(values) / len(values)}))
print(f"trained {epochs} epoch(s) on {len(values)} values")
"""
EVALUATE = """
import json, os, tarfile
tarfile.open("/opt/ml/processing/model/model.tar.gz").extractall("/tmp/m", filter="data")
mean = json.load(open("/tmp/m/model.json"))["mean"]
os.makedirs("/opt/ml/processing/report", exist_ok=True)
report = {"multiclass_classification_metrics": {"accuracy": {"value": 1 / (1 + mean)}}}
json.dump(report, open("/opt/ml/processing/report/evaluation.json", "w"))
"""


def pipeline() -> dict:
    train = {
        "Name": "Train",
        "Type": "Training",
        "CacheConfig": {"Enabled": True, "ExpireAfter": "P30D"},
        "Arguments": {
            "AlgorithmSpecification": {
                "TrainingImage": "img",
                "TrainingInputMode": "File",
                "ContainerEntrypoint": ["python3"],
                "ContainerArguments": ["/opt/ml/input/data/code/train.py"],
            },
            "HyperParameters": {"epochs": {"Get": "Parameters.Epochs"}},
            "InputDataConfig": [
                {
                    "ChannelName": name,
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
                    "InputMode": "File",
                }
                for name, uri in (("code", "s3://b/code/"), ("train", {"Get": "Parameters.InputData"}))
            ],
            "OutputDataConfig": {"S3OutputPath": "s3://b/models"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 120},
            "RoleArn": ROLE,
        },
    }
    report = {
        "Std:Join": {"On": "/", "Values": ["s3://b", {"Get": "Execution.PipelineExecutionId"}, "report"]}
    }
    evaluate = {
        "Name": "Evaluate",
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
            },
            "AppSpecification": {
                "ImageUri": "python",
                "ContainerEntrypoint": ["python3", "/opt/ml/processing/code/evaluate.py"],
            },
            "RoleArn": ROLE,
            "ProcessingInputs": [
                {
                    "InputName": "code",
                    "S3Input": {
                        "S3Uri": "s3://b/evaluate/",
                        "LocalPath": "/opt/ml/processing/code",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                },
                {
                    "InputName": "model",
                    "S3Input": {
                        "S3Uri": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
                        "LocalPath": "/opt/ml/processing/model",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                },
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": "report",
                        "S3Output": {
                            "S3Uri": report,
                            "LocalPath": "/opt/ml/processing/report",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
        },
    }
    register = {
        "Name": "Register",
        "Type": "RegisterModel",
        "DependsOn": ["Evaluate"],
        "Arguments": {
            "ModelPackageGroupName": GROUP,
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/infer:1",
                        "ModelDataUrl": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
                    }
                ],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": {"Std:Join": {"On": "/", "Values": [report, "evaluation.json"]}},
                    }
                }
            },
        },
    }
    params = [
        {"Name": "InputData", "Type": "String", "DefaultValue": DATA_A},
        {"Name": "Epochs", "Type": "String", "DefaultValue": "1"},
    ]
    return {
        "Version": "2020-12-01",
        "Metadata": {},
        "Parameters": params,
        "Steps": [train, evaluate, register],
    }


def run(definition, home, *params: str) -> subprocess.CompletedProcess:
    """``mlops run --definition`` as a user runs it (its console output is what the test reads)."""
    argv = ["run", "--definition", str(definition), "--home", str(home), *(f"--param={p}" for p in params)]
    return subprocess.run(
        [sys.executable, "-m", "mlops.cli.main", *argv], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Three runs: data A (version 1), data B (version 2), data B again with Train cached (version 3)."""
    root = tmp_path_factory.mktemp("compare-home")
    source = root / "src"  # the project's work tree: a git repository apart from the home
    source.mkdir()
    definition = source / "tiny.json"
    definition.write_text(json.dumps(pipeline()))
    commits = [git_commit(source, "first")]
    store = S3Store(Home.open(root).s3_root)
    store.put_bytes("s3://b/code/train.py", TRAIN.encode())
    store.put_bytes("s3://b/evaluate/evaluate.py", EVALUATE.encode())
    store.put_bytes(DATA_A + "part-0.csv", b"1,2,3\n")
    store.put_bytes(DATA_B + "part-0.csv", b"4,5,6,7\n")
    runs = [run(definition, root)]
    (source / "NOTES.md").write_text("data B from now on\n")
    commits.append(git_commit(source, "second"))
    runs.append(run(definition, root, f"InputData={DATA_B}"))
    (source / "NOTES.md").write_text("an uncommitted edit\n")  # the third run starts from a dirty tree
    runs.append(run(definition, root, f"InputData={DATA_B}"))
    for done in runs:
        assert done.returncode == 0, done.stdout + done.stderr
    return root, store, runs, commits


def git_commit(tree, message: str) -> str:
    def git(*args):
        return subprocess.run(
            ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    if not (tree / ".git").exists():
        git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", message)
    return git("rev-parse", "HEAD")


def cli(capsys, home, *args) -> tuple[int, str]:
    code = main(["models", *args, "--home", str(home)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_versions_over_different_data_show_the_data_digest_change(capsys, home):
    root, store, _, commits = home
    code, text = cli(capsys, root, "compare", f"{GROUP}/1", f"{GROUP}/2", "--format", "json")
    assert code == 0, text
    result = json.loads(text)
    rows = {(r["kind"], r["name"]): r for r in result["lineage"]}

    data = rows[("data", "train")]
    assert data["change"] == "changed"
    assert (data["a"], data["b"]) == (store.digest(DATA_A), store.digest(DATA_B))
    assert rows[("data uri", "train")]["a"] == DATA_A and rows[("data uri", "train")]["b"] == DATA_B
    assert rows[("data", "code")]["change"] == "same"
    assert rows[("parameter", "InputData")]["change"] == "changed"
    assert rows[("hyperparameter", "epochs")]["change"] == "same"
    assert rows[("model", "artifact sha256")]["change"] == "changed"
    assert {"data", "model", "parameter", "source"} <= set(result["changed"])
    assert (rows[("source", "git commit")]["a"], rows[("source", "git commit")]["b"]) == tuple(commits)
    assert rows[("source", "git dirty")] == {**rows[("source", "git dirty")], "a": False, "b": False}

    # accuracy = 1 / (1 + mean): data A's mean is 2, data B's 5.5
    (accuracy,) = result["metrics"]
    assert accuracy["metric"] == "accuracy"
    assert accuracy["a"] == pytest.approx(1 / 3) and accuracy["b"] == pytest.approx(1 / 6.5)
    assert accuracy["diff"] == pytest.approx(1 / 6.5 - 1 / 3)


def test_compare_table_fits_80_columns(capsys, home, monkeypatch):
    root, store, _, commits = home
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal of 80 columns, as rich sees one
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    code, text = cli(capsys, root, "compare", f"{GROUP}/1", f"{GROUP}/2")
    assert code == 0, text
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = plain.splitlines()
    assert max(len(line) for line in lines) <= 80, plain
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    digests = [store.digest(DATA_A)[:12], store.digest(DATA_B)[:12]]
    assert ["data", "train", *digests, "changed"] in cells, plain
    assert ["accuracy", "0.3333", "0.1538", "-0.1795"] in cells, plain  # B - A, to 4 digits
    assert ["data uri", "train", "…//b/data/a/", "…//b/data/b/", "changed"] in cells, plain  # a URI's tail
    assert ["source", "git commit", commits[0][:12], commits[1][:12], "changed"] in cells, plain


def test_a_cached_rerun_registers_an_identical_version_with_a_warning(capsys, home):
    root, _, runs, _ = home
    expected = (
        f"{GROUP}/3 is identical to {GROUP}/2 (same model artifact): a cache hit of Train re-registered it"
    )
    assert expected in runs[2].stdout + runs[2].stderr
    assert "is identical" not in runs[1].stdout + runs[1].stderr
    h = Home.open(root)
    versions = h.registry.list(group=GROUP)
    assert [v["version"] for v in versions] == [1, 2, 3]  # SageMaker registers it too: so do we
    assert versions[2]["model_data_url"] == versions[1]["model_data_url"]
    warnings = [e for e in h.events.for_execution(versions[2]["execution_id"]) if e["kind"] == "warning"]
    assert [(e["step"], e["message"]) for e in warnings] == [("Register", expected)]

    code, text = cli(capsys, root, "compare", f"{GROUP}/2", f"{GROUP}/3", "--format", "json")
    assert code == 0, text
    result = json.loads(text)
    assert result["changed"] == ["source"]  # only the work tree: the third run started from a dirty one
    (dirty,) = [r for r in result["lineage"] if r["change"] != "same"]
    assert (dirty["name"], dirty["a"], dirty["b"]) == ("git dirty", False, True)
    assert all(m["diff"] == 0 for m in result["metrics"])
    code, text = cli(capsys, root, "compare", f"{GROUP}/1", f"{GROUP}/1")
    assert code == 0 and "lineage: the same code, data, model artifact and parameters" in text, text


def test_compare_refuses_aws_and_unknown_versions(capsys, home):
    root, *_ = home
    code, text = cli(capsys, root, "compare", f"{GROUP}/1", f"{GROUP}/9")
    assert code != 0 and f"{GROUP}/9: not in the local registry" in text
    code, text = cli(capsys, root, "compare", f"{GROUP}/1", f"{GROUP}/2", "--target", "aws")
    assert code != 0 and "SageMaker's registry keeps no lineage" in text


def test_an_older_home_opens_and_its_versions_compare_as_not_recorded(tmp_path, capsys):
    """A home whose model_packages predates ``provenance``: the column is added, old rows say not recorded."""
    import sqlite3

    from mlops.local.state.home import SCHEMA

    con = sqlite3.connect(tmp_path / "mlops.db")
    con.executescript(SCHEMA.replace("    provenance TEXT,\n", ""))  # the schema as it was (no provenance)
    assert "provenance" not in {r[1] for r in con.execute("PRAGMA table_info(model_packages)")}
    for version in (1, 2):
        con.execute(
            "INSERT INTO model_packages (group_name, version, arn, approval_status, model_data_url, metrics,"
            " request, created_at) VALUES (?, ?, ?, 'PendingManualApproval', ?, ?, '{}', '2026-01-01T00:00:00')",
            (GROUP, version, f"arn:aws:sagemaker:eu-west-1:123456789012:model-package/{GROUP}/{version}",
             f"s3://b/m{version}/model.tar.gz", json.dumps({})),
        )  # fmt: skip
    con.commit()
    con.close()

    h = Home.open(tmp_path)
    assert [v["provenance"] for v in h.registry.list(group=GROUP)] == [None, None]
    code, text = cli(capsys, tmp_path, "compare", f"{GROUP}/1", f"{GROUP}/2", "--format", "json")
    assert code == 0, text
    result = json.loads(text)
    rows = {(r["kind"], r["name"]): r["change"] for r in result["lineage"]}
    assert rows[("data", "-")] == "not recorded"
    assert rows[("model", "artifact url")] == "changed"
    assert f"A ({GROUP}/1) was registered before data digests were recorded" in result["notes"]
