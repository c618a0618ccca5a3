"""infra/mlops.yaml: cfn-lint, checkov, least privilege, parameters from config, bootstrap on moto."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.validate import ParamValidator

from mlops.aws import events, infra
from mlops.errors import ConfigError
from tests.project import PROJECT, load_config
from tests.project import ROOT as PROJECT_ROOT

from .conftest import ACCOUNT, REGION, ROOT

REPO = "https://github.com/example/digits.git"
# moto's CloudFormation skips resource types it does not model (CodeBuild, Scheduler, policies) with a warning.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
TEMPLATE_PATH = infra.template_path(PROJECT_ROOT)
TEMPLATE = infra.load_template(TEMPLATE_PATH)


def _valid(service: str, operation: str, request: dict) -> None:
    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()


def _cfn_lint() -> str:
    beside = Path(sys.executable).with_name("cfn-lint")  # the venv's script, even when not on PATH
    return str(beside) if beside.exists() else shutil.which("cfn-lint") or "cfn-lint"


def test_cfn_lint_is_clean():
    run = subprocess.run(
        [_cfn_lint(), *map(str, sorted((ROOT / "infra").glob("*.yaml")))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


def _checkov() -> str | None:
    return os.environ.get("CHECKOV_BIN") or shutil.which("checkov")


@pytest.mark.slow
@pytest.mark.skipif(
    _checkov() is None, reason="checkov not installed (pipx install checkov, or set CHECKOV_BIN)"
)
def test_checkov_has_no_failed_check_and_every_skip_has_a_reason():
    run = subprocess.run(
        [
            _checkov(),
            "-d",
            str(ROOT / "infra"),
            "--framework",
            "cloudformation",
            "-o",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(run.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    skipped = [c for r in reports for c in r["results"]["skipped_checks"]]
    assert [(c["check_id"], c["resource"]) for c in failed] == []
    assert all(len((c.get("check_result") or {}).get("suppress_comment", "")) > 20 for c in skipped), skipped
    assert sum(r["summary"]["passed"] for r in reports) > 30


def _statements(node):
    """Every IAM statement anywhere in the template (role policies, key, bucket and queue policies)."""
    if isinstance(node, dict):
        if "Statement" in node and isinstance(node["Statement"], list):
            yield from node["Statement"]
        for value in node.values():
            yield from _statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _statements(value)


def _as_list(x):
    return x if isinstance(x, list) else [x]


def test_no_allow_statement_grants_a_wildcard_action_on_a_wildcard_resource():
    statements = list(_statements(TEMPLATE["Resources"]))
    assert len(statements) > 20
    for st in statements:
        if st.get("Effect") != "Allow":
            continue
        actions = _as_list(st.get("Action", []))
        resources = _as_list(st.get("Resource", []))
        assert "*" not in actions, st
        if "*" in resources:
            assert not any(a.endswith(":*") for a in actions), st


def test_the_template_rule_is_the_pattern_events_py_defines(cfg):
    params = infra.render_parameters(cfg, repo_url=REPO)
    resolver = infra.Resolver(TEMPLATE, params, ACCOUNT, REGION)
    rule = resolver.resource("ModelApprovedRule")
    assert rule["EventPattern"] == events.approval_event_pattern(cfg.registry.model_package_group)
    (target,) = rule["Targets"]
    assert target["Arn"] == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/{cfg.project.deploy_pipeline}"
    assert (
        target["SageMakerPipelineParameters"]["PipelineParameterList"]
        == events.approval_pipeline_parameters()
    )
    _valid("events", "PutTargets", {"Rule": rule["Name"], "Targets": rule["Targets"]})


def test_rendered_parameters_fill_every_template_parameter(cfg, tmp_path):
    params = infra.render_parameters(cfg, repo_url=REPO)
    declared = TEMPLATE["Parameters"]
    assert set(params) <= set(declared)
    assert {k for k, spec in declared.items() if "Default" not in spec} <= set(params)
    assert params["ExecutionRoleName"] == "digits-ci-sagemaker-execution"
    assert params["KmsAliasName"] == "alias/digits-ci"
    assert (params["ScheduleExpression"], params["ScheduleTimezone"]) == (
        "cron(15 4 ? * TUE *)",
        "Europe/Berlin",
    )
    path = infra.write_parameters(params, tmp_path / "out" / "ci.parameters.json")
    assert json.loads(path.read_text()) == infra.cfn_parameters(params)
    assert [p.name for p in path.parent.iterdir()] == ["ci.parameters.json"]  # no temp file left
    _valid("cloudformation", "CreateStack", {"StackName": "s", "Parameters": infra.cfn_parameters(params)})


def test_repository_url_comes_from_the_origin_remote(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert infra.repository_url(tmp_path) is None
    subprocess.run(
        ["git", "-C", str(tmp_path), "remote", "add", "origin", "git@github.com:org/digits.git"], check=True
    )
    assert infra.repository_url(tmp_path) == "https://github.com/org/digits.git"


def test_render_without_a_repository_says_how_to_give_one(cfg, monkeypatch):
    monkeypatch.setattr(
        infra, "repository_url", lambda root=None: None
    )  # a checkout without an origin remote
    with pytest.raises(ConfigError, match="no git remote 'origin'.*--repo-url"):
        infra.render_parameters(cfg)


@pytest.mark.parametrize(
    "window, expected", [(20, {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 20}), (0, {"Mode": "OFF"})]
)
def test_schedule_exists_with_our_cron_and_target(moto, ci_config_dir, window, expected):
    cfg = load_config(
        "ci", directory=ci_config_dir, environ={"MLOPS__SCHEDULE__FLEXIBLE_WINDOW_MINUTES": str(window)}
    )
    resolver = infra.Resolver(TEMPLATE, infra.render_parameters(cfg, repo_url=REPO), ACCOUNT, REGION)
    dlq = boto3.client("sqs").create_queue(QueueName=f"{cfg.project.name}-{cfg.env}-trigger-dlq")["QueueUrl"]
    resolver.attributes["DeadLetterQueue.Arn"] = boto3.client("sqs").get_queue_attributes(
        QueueUrl=dlq, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    resolver.attributes["SchedulerRole.Arn"] = f"arn:aws:iam::{ACCOUNT}:role/scheduler"
    request = resolver.resource("RetrainingSchedule")
    _valid("scheduler", "CreateSchedule", request)
    boto3.client("scheduler").create_schedule(**request)

    got = boto3.client("scheduler").get_schedule(Name=f"{cfg.project.name}-{cfg.env}-retrain")
    assert got["ScheduleExpression"] == cfg.schedule.cron == "cron(15 4 ? * TUE *)"
    assert got["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert got["State"] == "ENABLED"
    assert got["FlexibleTimeWindow"] == expected
    assert (
        got["Target"]["Arn"] == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/{cfg.project.build_pipeline}"
    )
    assert got["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == cfg.retry.max_attempts
    assert got["Target"]["DeadLetterConfig"]["Arn"].endswith(":digits-ci-trigger-dlq")


def test_bootstrap_deploys_the_stack_and_a_second_run_changes_nothing(aws, cfg):
    params = infra.render_parameters(cfg, repo_url=REPO)
    seen = []
    result = infra.bootstrap(aws, cfg, params, TEMPLATE_PATH, on_event=seen.append, poll_s=0.05)
    assert (result.action, result.status) == ("created", "CREATE_COMPLETE")
    assert any(e["ResourceStatus"] == "CREATE_COMPLETE" for e in seen)

    # moto's bucket handler applies encryption and tags only; versioning and the public access block
    # are checked on the template (test_bucket_is_versioned_private_and_tls_only).
    s3 = boto3.client("s3")
    rule = s3.get_bucket_encryption(Bucket=cfg.aws.bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    role = boto3.client("iam").get_role(RoleName="digits-ci-sagemaker-execution")["Role"]
    assert role["Arn"] == cfg.aws.role_arn
    aliases = {a["AliasName"] for a in boto3.client("kms").list_aliases()["Aliases"]}
    assert "alias/digits-ci" in aliases

    ev = boto3.client("events")
    deployed = ev.describe_rule(Name="digits-ci-model-approved")
    pattern = json.loads(deployed["EventPattern"])
    assert pattern == events.approval_event_pattern(cfg.registry.model_package_group)
    assert events.matches(pattern, events.sample_state_change_event(cfg.registry.model_package_group))
    assert not events.matches(
        pattern, events.sample_state_change_event(cfg.registry.model_package_group, "Rejected")
    )
    (target,) = ev.list_targets_by_rule(Rule="digits-ci-model-approved")["Targets"]
    assert (
        target["SageMakerPipelineParameters"]["PipelineParameterList"]
        == events.approval_pipeline_parameters()
    )

    # the promotion gate's queue: where the compiled Callback step's SqsQueueUrl points (account and name)
    gate_url = PROJECT.declaration.promotion.queue_url(cfg)
    created = boto3.client("sqs").get_queue_url(QueueName=gate_url.rsplit("/", 1)[1])["QueueUrl"]
    assert created.split("/")[-2:] == gate_url.split("/")[-2:] == [ACCOUNT, "digits-ci-promotion"]

    again = infra.bootstrap(aws, cfg, params, TEMPLATE_PATH, poll_s=0.05)
    assert (again.action, again.status) == ("unchanged", "CREATE_COMPLETE")


def test_bucket_is_versioned_private_and_tls_only(cfg):
    resolver = infra.Resolver(TEMPLATE, infra.render_parameters(cfg, repo_url=REPO), ACCOUNT, REGION)
    bucket = resolver.resource("ArtifactBucket")
    assert bucket["BucketName"] == cfg.aws.bucket
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    sse = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert sse == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "ArtifactKey-Arn"}
    (deny,) = resolver.resource("ArtifactBucketPolicy")["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})
    project = resolver.resource("BuildProject")
    assert project["Triggers"]["FilterGroups"] == [
        [{"Type": "EVENT", "Pattern": "PUSH"}, {"Type": "HEAD_REF", "Pattern": "^refs/heads/main$"}]
    ]
    assert project["Source"] == {
        "Type": "GITHUB",
        "Location": REPO,
        "BuildSpec": "buildspec.yml",
        "GitCloneDepth": 1,
        "ReportBuildStatus": True,
    }
    assert {"Name": "MLOPS_ENV", "Value": "ci"} in project["Environment"]["EnvironmentVariables"]


def test_bootstrap_request_validates(cfg):
    params = infra.render_parameters(cfg, repo_url=REPO)
    _valid(
        "cloudformation",
        "CreateChangeSet",
        {
            "StackName": infra.stack_name(cfg),
            "ChangeSetName": "mlops-1",
            "ChangeSetType": "CREATE",
            "TemplateBody": TEMPLATE_PATH.read_text(),
            "Parameters": infra.cfn_parameters(params),
            "Capabilities": infra.CAPABILITIES,
            "Tags": [{"Key": "k", "Value": "v"}],
        },
    )
    assert len(TEMPLATE_PATH.read_text().encode()) < 51200  # TemplateBody limit


def _role_statements(resolver, role):
    for policy in resolver.resource(role).get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]


def test_ecr_pulls_only_from_this_account_and_the_framework_image_accounts(cfg):
    params = infra.render_parameters(cfg, repo_url=REPO)
    assert params["FrameworkImageAccountId"] == TEMPLATE["Parameters"]["FrameworkImageAccountId"]["Default"]
    assert params["ScikitLearnImageAccountId"].isdigit() and len(params["ScikitLearnImageAccountId"]) == 12
    resolver = infra.Resolver(TEMPLATE, params, ACCOUNT, REGION)
    pull = next(
        s for s in _role_statements(resolver, "SageMakerExecutionRole") if s["Sid"] == "PullFrameworkImages"
    )
    accounts = {arn.split(":")[4] for arn in pull["Resource"]}
    assert accounts == {ACCOUNT, params["FrameworkImageAccountId"], params["ScikitLearnImageAccountId"]}
    assert all(arn.split(":")[3] == REGION for arn in pull["Resource"])


def test_every_pass_role_is_limited_to_sagemaker():
    passes = [
        s for s in _statements(TEMPLATE["Resources"]) if "iam:PassRole" in _as_list(s.get("Action", []))
    ]
    assert len(passes) >= 2
    for st in passes:
        assert _as_list(st["Action"]) == ["iam:PassRole"], st
        assert st["Condition"]["StringEquals"]["iam:PassedToService"] == "sagemaker.amazonaws.com", st


def test_every_log_group_of_the_template_is_kms_encrypted_with_a_retention():
    groups = {k: r for k, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::Logs::LogGroup"}
    assert groups, "the CodeBuild log group is created by the template"
    for name, group in groups.items():
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["ArtifactKey", "Arn"]}, name
        assert "RetentionInDays" in group["Properties"], name
    key_policy = TEMPLATE["Resources"]["ArtifactKey"]["Properties"]["KeyPolicy"]["Statement"]
    logs = next(s for s in key_policy if s["Sid"] == "LogsEncryptThisAccountsLogGroups")
    assert "kms:EncryptionContext:aws:logs:arn" in logs["Condition"]["ArnLike"]


def test_infra_render_warns_on_a_repository_url_that_is_not_https(moto, cfg, tmp_path, capsys):
    from mlops.cli.main import main

    argv = ["infra", "render", "--env", "ci", "--out", str(tmp_path / "p.json"), "--repo-url"]
    assert main([*argv, "http://github.com/example/digits.git"]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "warning: RepositoryUrl 'http://github.com/example/digits.git' is not an https:// URL"
    )
    assert "\n" not in err
    assert main([*argv, REPO]) == 0
    assert capsys.readouterr().err == ""


def test_the_execution_role_may_report_to_the_mlflow_server_only_when_tracking_names_one(cfg, ci_config_dir):
    def resolver(config):
        return infra.Resolver(TEMPLATE, infra.render_parameters(config, repo_url=REPO), ACCOUNT, REGION)

    assert TEMPLATE["Resources"]["MlflowTrackingPolicy"]["Condition"] == "HasMlflow"
    assert resolver(cfg).conditions["HasMlflow"] is False  # tracking off: no policy
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-tracking-server/digits"
    tracked = load_config(
        "ci", directory=ci_config_dir,
        environ={"MLOPS__TRACKING__MLFLOW__ENABLED": "true", "MLOPS__TRACKING__MLFLOW__TRACKING_SERVER_ARN": arn},
    )  # fmt: skip
    on = resolver(tracked)
    assert on.conditions["HasMlflow"] is True
    policy = on.resource("MlflowTrackingPolicy")
    assert policy["RoleName"] == "SageMakerExecutionRole-ref"
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert (statement["Action"], statement["Resource"]) == ("sagemaker-mlflow:*", arn)
