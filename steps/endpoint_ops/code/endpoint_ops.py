"""Rollback alarms and target-tracking autoscaling for a SageMaker endpoint variant.

Runs as a processing job (SageMaker Pipelines has no step type for CloudWatch or Application Auto
Scaling). The request builders are pure functions so tests validate them against botocore's models.

    python3 endpoint_ops.py alarms --endpoint NAME --max-5xx-rate 0.01 --max-latency-ms 200 --periods 2
    python3 endpoint_ops.py autoscaling --endpoint NAME --min 2 --max 6 --target 200
"""

from __future__ import annotations

import argparse
import sys

VARIANT = "AllTraffic"


def alarm_names(endpoint: str) -> list[str]:
    return [f"{endpoint}-5xx-rate", f"{endpoint}-model-latency"]


def alarm_requests(
    endpoint: str, max_5xx_rate: float, max_latency_ms: float, periods: int, variant: str = VARIANT
) -> list[dict]:
    """PutMetricAlarm requests: the 5xx share of invocations, and p99 model latency (microseconds)."""
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]

    def metric(id_, name, stat):
        return {
            "Id": id_,
            "MetricStat": {
                "Metric": {"Namespace": "AWS/SageMaker", "MetricName": name, "Dimensions": dims},
                "Period": 60,
                "Stat": stat,
            },
            "ReturnData": False,
        }

    rate_name, latency_name = alarm_names(endpoint)
    return [
        {
            "AlarmName": rate_name,
            "AlarmDescription": f"share of 5xx responses of {endpoint} above {max_5xx_rate}",
            "Metrics": [
                metric("errors", "Invocation5XXErrors", "Sum"),
                metric("invocations", "Invocations", "Sum"),
                {
                    "Id": "rate",
                    "Expression": "IF(invocations > 0, errors / invocations, 0)",
                    "Label": "5xx rate",
                    "ReturnData": True,
                },
            ],
            "EvaluationPeriods": periods,
            "Threshold": max_5xx_rate,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
        {
            "AlarmName": latency_name,
            "AlarmDescription": f"p99 model latency of {endpoint} above {max_latency_ms} ms",
            "Namespace": "AWS/SageMaker",
            "MetricName": "ModelLatency",
            "Dimensions": dims,
            "ExtendedStatistic": "p99",
            "Period": 60,
            "EvaluationPeriods": periods,
            "Threshold": max_latency_ms * 1000.0,  # ModelLatency is reported in microseconds
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
    ]


def scaling_requests(endpoint: str, min_capacity: int, max_capacity: int, target: float,
                     scale_in_s: int = 300, scale_out_s: int = 60, variant: str = VARIANT) -> tuple[dict, dict]:  # fmt: skip
    """RegisterScalableTarget + PutScalingPolicy (target tracking on invocations per instance)."""
    resource = f"endpoint/{endpoint}/variant/{variant}"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    target_request = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource,
        "ScalableDimension": dimension,
        "MinCapacity": min_capacity,
        "MaxCapacity": max_capacity,
    }
    policy_request = {
        "PolicyName": f"{endpoint}-invocations-per-instance",
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource,
        "ScalableDimension": dimension,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": target,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleInCooldown": scale_in_s,
            "ScaleOutCooldown": scale_out_s,
        },
    }
    return target_request, policy_request


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="phase", required=True)
    a = sub.add_parser("alarms")
    a.add_argument("--endpoint", required=True)
    a.add_argument("--max-5xx-rate", type=float, required=True)
    a.add_argument("--max-latency-ms", type=float, required=True)
    a.add_argument("--periods", type=int, default=2)
    s = sub.add_parser("autoscaling")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--min", type=int, required=True)
    s.add_argument("--max", type=int, required=True)
    s.add_argument("--target", type=float, required=True)
    args = parser.parse_args(argv)

    import boto3

    if args.phase == "alarms":
        cloudwatch = boto3.client("cloudwatch")
        for request in alarm_requests(args.endpoint, args.max_5xx_rate, args.max_latency_ms, args.periods):
            cloudwatch.put_metric_alarm(**request)
            print(f"alarm {request['AlarmName']} in place", flush=True)
    else:
        scaling = boto3.client("application-autoscaling")
        target, policy = scaling_requests(args.endpoint, args.min, args.max, args.target)
        scaling.register_scalable_target(**target)
        scaling.put_scaling_policy(**policy)
        print(
            f"autoscaling {target['ResourceId']}: {args.min}..{args.max}, target {args.target}/instance",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
