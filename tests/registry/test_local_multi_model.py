"""A multi-model staging endpoint, deployed locally by the model-deploy pipeline and invoked through boto3.

``MLOPS__ENDPOINTS__STAGING__MODE=multi-model`` selects the mode, as an overlay would; the approved version
is the one test_local_deploy's ``home`` fixture trains (one training run for this module).
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from mlops.cli.main import main
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home
from mlops.serving import supervisor
from mlops.serving.runtime_api import RuntimeApiServer
from tests.registry.test_local_deploy import GROUP, PRODUCTION, STAGING, home, known_digits  # noqa: F401

pytestmark = pytest.mark.slow

PREFIX = "s3://mlops-local/digits/local/multi-model/digits-classifier/"


@pytest.fixture(scope="module")
def deployed(home):  # noqa: F811 (the fixture imported above)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS__ENDPOINTS__STAGING__MODE", "multi-model")
        code = main(
            ["models", "approve", f"{GROUP}/1", "--reason", "multi-model staging", "--home", str(home)]
        )
    assert code == 0
    return home


def runtime(url: str):
    import boto3

    return boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local",
    )  # fmt: skip


def test_the_deploy_publishes_the_version_and_staging_serves_it_by_target_model(deployed, capsys):
    root = deployed
    assert main(["models", "show", f"{GROUP}/1", "--format", "json", "--home", str(root)]) == 0
    (deployment,) = json.loads(capsys.readouterr().out)["deployments"]
    assert deployment["status"] == "Succeeded", deployment
    steps = {s["name"]: s for s in deployment["steps"]}
    assert [s["name"] for s in deployment["steps"]][:6] == [
        "CreateModel", "PublishMultiModelArtifact", "CreateMultiModel", "StagingEndpointConfig",
        "StagingEndpoint", "SmokeTest",
    ]  # fmt: skip
    assert steps["SmokeTest"]["status"] == "Succeeded"
    assert steps["StagingEndpoint"]["report"]["passed"] is True  # the gate sent TargetModel too

    h = Home.open(root)
    store = S3Store(h.s3_root)
    (package,) = [p for p in h.registry.list(group=GROUP) if p["version"] == 1]
    assert store.path(PREFIX + "v1.tar.gz").read_bytes() == store.path(package["model_data_url"]).read_bytes()
    staging = supervisor.get_endpoint(STAGING, home=root)
    assert staging.active.multi_model and staging.active.model_dir == str(store.path(PREFIX))
    assert not supervisor.get_endpoint(PRODUCTION, home=root).active.multi_model  # production: real-time

    rows, labels = known_digits(root)
    with RuntimeApiServer(root) as api:
        client = runtime(api.url)
        answer = client.invoke_endpoint(
            EndpointName=STAGING, TargetModel="v1.tar.gz", Body=json.dumps({"instances": rows}),
            ContentType="application/json", Accept="application/json",
        )  # fmt: skip
        predicted = [p["label"] for p in json.loads(answer["Body"].read())["predictions"]]
        assert sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels) >= 0.9

        for target in ("v99.tar.gz", None):
            with pytest.raises(ClientError) as err:
                client.invoke_endpoint(
                    EndpointName=STAGING, Body=json.dumps({"instances": rows[:1]}),
                    ContentType="application/json", **({"TargetModel": target} if target else {}),
                )  # fmt: skip
            status = err.value.response["ResponseMetadata"]["HTTPStatusCode"]
            assert 400 <= status < 500 and err.value.response["Error"]["Code"] == "ValidationError"
            assert ("Failed to download model data" if target else "give TargetModel") in str(err.value)
