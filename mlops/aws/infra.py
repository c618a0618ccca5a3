"""The project's CloudFormation stack: parameters rendered from config, deployed with a change set.

``infra/mlops.yaml`` is the template. :func:`render_parameters` is the only place config meets it;
:func:`bootstrap` creates or updates the stack and reports its events as they happen.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlops.aws.session import Aws, AwsError, aws_call
from mlops.errors import ConfigError

log = logging.getLogger(__name__)

TEMPLATE = Path("infra") / "mlops.yaml"  # relative to the project root
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
DEFAULT_KMS_ALIAS = "alias/{project}-{env}"
STACK_DONE = ("_COMPLETE", "_FAILED")
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")


def stack_name(cfg) -> str:
    return f"{cfg.project.name}-{cfg.env}-mlops"


def repository_url(root: Path) -> str | None:
    """The ``origin`` remote as an HTTPS URL (what a CodeBuild GITHUB source takes), if there is one."""
    try:
        out = subprocess.run(
            ["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    url = out.stdout.strip()
    if not url:
        return None
    if url.startswith("git@"):  # git@github.com:org/repo.git -> https://github.com/org/repo.git
        host, _, path = url[len("git@") :].partition(":")
        url = f"https://{host}/{path}"
    return url


def repository_warning(url: str) -> str | None:
    """Why ``url`` is a poor CodeBuild source (not https: credentials or code travel unencrypted), or None."""
    if url.lower().startswith("https://"):
        return None
    scheme = url.split("://", 1)[0] if "://" in url else "no scheme"
    return (
        f"RepositoryUrl {url!r} is not an https:// URL ({scheme}); CodeBuild's GITHUB source expects "
        "https://github.com/ORG/REPO.git (pass --repo-url)"
    )


# Template parameter -> SageMaker SDK image framework whose registry account the execution role may pull from.
IMAGE_ACCOUNT_PARAMETERS = {"FrameworkImageAccountId": "pytorch", "ScikitLearnImageAccountId": "sklearn"}


def image_account(framework: str, region: str) -> str | None:
    """The account that serves ``framework``'s SageMaker images in ``region`` (the SDK's registry), or None."""
    try:
        from sagemaker.core import image_uris

        config = image_uris.config_for_framework(framework)
    except Exception:  # no SDK, or it does not know the framework: the template's default applies
        return None
    for scope in ("training", "inference", None):
        versions = (
            (config.get(scope) if scope else config).get("versions") if isinstance(config, dict) else None
        )
        for spec in reversed(list((versions or {}).values())):
            registries = spec.get("registries") or next(
                (v.get("registries") for v in spec.values() if isinstance(v, dict) and "registries" in v),
                None,
            )
            if registries and region in registries:
                return str(registries[region])
    return None


def render_parameters(
    cfg, repo_url: str | None = None, branch: str = "main", *, root: Path | None = None
) -> dict[str, str]:
    """Template parameters from config; every value a string, as CloudFormation takes them."""
    repo_url = repo_url or (repository_url(root) if root else None)
    if not repo_url:
        raise ConfigError("infra: no git remote 'origin' to build from; pass --repo-url URL")
    kms = cfg.aws.kms_key_id
    alias = (
        kms
        if kms and kms.startswith("alias/")
        else DEFAULT_KMS_ALIAS.format(project=cfg.project.name, env=cfg.env)
    )
    return (
        {
            "ProjectName": cfg.project.name,
            "Environment": cfg.env,
            "ArtifactBucketName": cfg.aws.bucket,
            "ArtifactPrefix": cfg.aws.prefix,
            "KmsAliasName": alias,
            "ExecutionRoleName": cfg.aws.role_arn.rsplit("/", 1)[-1],
            "BuildPipelineName": cfg.project.build_pipeline,
            "DeployPipelineName": cfg.project.deploy_pipeline,
            "ModelPackageGroupName": cfg.registry.model_package_group,
            "RepositoryUrl": repo_url,
            "BranchName": branch,
            "ScheduleExpression": cfg.schedule.cron,
            "ScheduleTimezone": cfg.schedule.timezone,
            "ScheduleState": "ENABLED" if cfg.schedule.enabled else "DISABLED",
            "FlexibleWindowMinutes": str(cfg.schedule.flexible_window_minutes),
            "RetryAttempts": str(cfg.retry.max_attempts),
            # the execution role may report to the pipeline's MlflowConfig server (empty: no such policy)
            "MlflowTrackingServerArn": (
                (cfg.tracking.mlflow.tracking_server_arn or "") if cfg.tracking.mlflow.enabled else ""
            ),
        }
        | cfg.infra_parameters()
        | {
            key: account
            for key, framework in IMAGE_ACCOUNT_PARAMETERS.items()
            if (account := image_account(framework, cfg.aws.region))
        }
    )


def cfn_parameters(params: dict[str, str]) -> list[dict[str, str]]:
    """The list form CreateStack takes, and `aws cloudformation deploy --parameter-overrides` reads."""
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(params.items())]


def write_parameters(params: dict[str, str], path: Path) -> Path:
    """Write the parameters JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(cfn_parameters(params), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------- template reading


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns short-form intrinsics (``!Ref X``) into their long form (``{"Ref": "X"}``)."""


def _intrinsic(tag: str):
    name = "Ref" if tag == "Ref" else f"Fn::{tag}"

    def construct(loader: yaml.Loader, node: yaml.Node):
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


for _tag in (
    "Ref",
    "Sub",
    "GetAtt",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "Join",
    "Select",
    "Split",
    "FindInMap",
    "ImportValue",
    "GetAZs",
    "Base64",
    "Cidr",
    "Condition",
):
    _CfnLoader.add_constructor(f"!{_tag}", _intrinsic(_tag))


def template_path(root: Path) -> Path:
    return Path(root) / TEMPLATE


def load_template(path: Path) -> dict[str, Any]:
    return yaml.load(Path(path).read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


class Resolver:
    """Evaluates the intrinsics our template uses, for checks that do not need CloudFormation itself.

    ``GetAtt X.Arn`` resolves to the ARN the resource would get from its name, or a placeholder.
    """

    def __init__(
        self, template: dict, parameters: dict[str, str], account: str, region: str, partition="aws"
    ):
        self.template = template
        self.values: dict[str, Any] = {
            name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()
        }
        self.values.update(parameters)
        for name, spec in template.get("Parameters", {}).items():
            # CloudFormation hands Number parameters to integer properties as numbers.
            if spec.get("Type") == "Number" and self.values.get(name) is not None:
                number = float(self.values[name])
                self.values[name] = int(number) if number.is_integer() else number
        self.values.update(
            {
                "AWS::AccountId": account,
                "AWS::Region": region,
                "AWS::Partition": partition,
                "AWS::NoValue": None,
            }
        )
        self.attributes: dict[str, str] = {}
        self.conditions = {name: self.resolve(expr) for name, expr in template.get("Conditions", {}).items()}

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self.values.get(arg, f"{arg}-ref")
            if key == "Fn::GetAtt":
                res, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.attributes.get(f"{res}.{attr}", f"{res}-{attr}")
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.conditions[cond] else no)
            if key == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(x) for x in self.resolve(items))
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not None}

    def _sub(self, arg) -> str:
        import re

        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def one(m):
            name = m.group(1)
            if name in extra:
                return str(self.resolve(extra[name]))
            if "." in name:
                return str(self.resolve({"Fn::GetAtt": name.split(".", 1)}))
            return str(self.resolve({"Ref": name}))

        return re.sub(r"\$\{([\w:.]+)\}", one, text)

    def resource(self, logical_id: str) -> dict[str, Any]:
        return self.resolve(self.template["Resources"][logical_id].get("Properties", {}))


# ---------------------------------------------------------------------------------------- bootstrap


@dataclass
class BootstrapResult:
    stack: str
    action: str  # "created" | "updated" | "unchanged"
    status: str
    outputs: dict[str, str]


def bootstrap(
    aws: Aws,
    cfg,
    params: dict[str, str],
    template: Path,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 5.0,
    timeout_s: float = 3600.0,
) -> BootstrapResult:
    """Create or update the stack through a change set, then wait, reporting each new stack event."""
    cfn = aws.client("cloudformation")
    name = stack_name(cfg)
    existing = _stack(aws, name)
    kind = "UPDATE" if existing and existing["StackStatus"] != "REVIEW_IN_PROGRESS" else "CREATE"
    if existing and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        raise AwsError(
            f"stack {name} failed to create earlier (ROLLBACK_COMPLETE); see its events, delete it "
            f"(aws cloudformation delete-stack --stack-name {name}) and bootstrap again"
        )
    if existing and existing["StackStatus"].endswith("_IN_PROGRESS") and kind == "UPDATE":
        raise AwsError(f"stack {name} is busy ({existing['StackStatus']}); wait for it to finish")
    change_set = f"mlops-{uuid.uuid4().hex[:12]}"
    tags = [{"Key": k, "Value": v} for k, v in sorted(cfg.aws.tags.items())]
    request = {
        "StackName": name,
        "ChangeSetName": change_set,
        "ChangeSetType": kind,
        "TemplateBody": Path(template).read_text(),
        "Parameters": cfn_parameters(params),
        "Capabilities": CAPABILITIES,
        "Tags": tags,
        "Description": f"mlops bootstrap --env {cfg.env}",
    }
    seen = {e["EventId"] for e in _events(aws, name)} if existing else set()
    with aws_call("cloudformation:CreateChangeSet", f"stack {name}"):
        cfn.create_change_set(**request)
    ready = _wait_change_set(aws, name, change_set, poll_s, timeout_s)
    if ready is None:
        with aws_call("cloudformation:DeleteChangeSet", f"stack {name}"):
            cfn.delete_change_set(StackName=name, ChangeSetName=change_set)
        status = existing["StackStatus"] if existing else "UNKNOWN"
        return BootstrapResult(name, "unchanged", status, _outputs(existing or {}))
    with aws_call("cloudformation:ExecuteChangeSet", f"stack {name}"):
        cfn.execute_change_set(StackName=name, ChangeSetName=change_set)
    stack = _wait_stack(aws, name, seen, on_event, poll_s, timeout_s)
    status = stack["StackStatus"]
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        reason = stack.get("StackStatusReason") or "see the stack events above"
        raise AwsError(f"stack {name}: {status}: {reason}")
    return BootstrapResult(name, "created" if kind == "CREATE" else "updated", status, _outputs(stack))


def _stack(aws: Aws, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    with aws_call("cloudformation:DescribeStacks", f"stack {name}"):  # no credentials: one line, too
        try:
            return aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
        except ClientError as exc:
            if "does not exist" in str(exc.response.get("Error", {}).get("Message", "")):
                return None
            raise


def _events(aws: Aws, name: str) -> list[dict[str, Any]]:
    with aws_call("cloudformation:DescribeStackEvents", f"stack {name}"):
        return aws.client("cloudformation").describe_stack_events(StackName=name).get("StackEvents", [])


def _outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}


def _wait_change_set(aws: Aws, name: str, change_set: str, poll_s: float, timeout_s: float) -> dict | None:
    """The change set once it is ready to execute, or None when it holds no changes."""
    cfn = aws.client("cloudformation")
    deadline = time.monotonic() + timeout_s
    while True:
        with aws_call("cloudformation:DescribeChangeSet", f"stack {name}"):
            desc = cfn.describe_change_set(StackName=name, ChangeSetName=change_set)
        status = desc.get("Status")
        if status == "CREATE_COMPLETE":
            return desc
        if status == "FAILED":
            reason = desc.get("StatusReason", "")
            if any(s in reason for s in NO_CHANGES):
                return None
            raise AwsError(f"stack {name}: change set failed: {reason}")
        if time.monotonic() > deadline:
            raise AwsError(f"stack {name}: change set still {status} after {timeout_s:g} s")
        time.sleep(poll_s)


def _wait_stack(aws, name, seen: set[str], on_event, poll_s: float, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        for event in reversed(_events(aws, name)):  # oldest first
            if event["EventId"] not in seen:
                seen.add(event["EventId"])
                if on_event:
                    on_event(event)
        stack = _stack(aws, name) or {}
        status = stack.get("StackStatus", "")
        if status.endswith(STACK_DONE) and not status.endswith("_IN_PROGRESS"):
            return stack
        if time.monotonic() > deadline:
            raise AwsError(f"stack {name}: still {status} after {timeout_s:g} s")
        time.sleep(poll_s)
