"""Image URIs -> what they stand for, on URIs as the SageMaker SDK (v3) generates them."""

from __future__ import annotations

import glob
import json
import os

import pytest

from mlops.local.images.image_uri import (
    AWS_REPOSITORIES,
    BUILTIN_ALGORITHMS,
    DOCUMENTED_PYTHON,
    parse_image_uri,
    python_from_tag_token,
    split_image_uri,
)

ECR = "{account}.dkr.ecr.{region}.amazonaws.com"
DLC = ECR.format(account="763104351884", region="us-east-1")
SK = ECR.format(account="683313688378", region="us-east-1")

# uri -> (kind, framework, framework_version, python_version, python_source, processor, scope); the URIs are
# `sagemaker.core.image_uris.retrieve` outputs (sagemaker-core 2.27), region us-east-1 unless named.
CASES = {
    f"{SK}/sagemaker-scikit-learn:1.2-1-cpu-py3": ("framework", "sklearn", "1.2-1", "3.9", "documented", "cpu", None),
    f"{SK}/sagemaker-scikit-learn:0.23-1-cpu-py3": ("framework", "sklearn", "0.23-1", "3.7", "documented", "cpu", None),
    f"{SK}/sagemaker-scikit-learn:1.0-1-cpu-py3": ("framework", "sklearn", "1.0-1", "3.8", "documented", "cpu", None),
    f"{SK}/sagemaker-scikit-learn:1.4-2-cpu-py3": ("framework", "sklearn", "1.4-2", "3.10", "documented", "cpu", None),
    "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.4-2-py312-cpu-py3": (
        "framework", "sklearn", "1.4-2-py312", "3.12", "tag", "cpu", None,
    ),
    f"{SK}/sagemaker-scikit-learn:1.9-0-cpu-py3": ("framework", "sklearn", "1.9-0", "3.12", "documented", "cpu", None),
    f"{SK}/sagemaker-xgboost:1.7-1": ("framework", "xgboost", "1.7-1", "3.9", "documented", None, None),
    f"{SK}/sagemaker-xgboost:3.0-5": ("framework", "xgboost", "3.0-5", "3.10", "documented", None, None),
    f"{SK}/sagemaker-xgboost:0.90-2-cpu-py3": ("framework", "xgboost", "0.90-2", "3.6", "documented", "cpu", None),
    f"{DLC}/pytorch-training:2.5-cpu-py311": ("framework", "pytorch", "2.5", "3.11", "tag", "cpu", "training"),
    f"{DLC}/pytorch-inference:2.5-cpu-py311": ("framework", "pytorch", "2.5", "3.11", "tag", "cpu", "inference"),
    f"{DLC}/pytorch-training:2.10.0-gpu-py313": ("framework", "pytorch", "2.10.0", "3.13", "tag", "gpu", "training"),
    f"{DLC}/pytorch-inference-graviton:2.4.0-cpu-py311-ubuntu22.04-sagemaker": (
        "framework", "pytorch", "2.4.0", "3.11", "tag", "cpu", "inference",
    ),
    "520713654638.dkr.ecr.us-east-1.amazonaws.com/sagemaker-pytorch:1.1.0-cpu-py3": (
        "framework", "pytorch", "1.1.0", None, None, "cpu", None,
    ),
    f"{DLC}/tensorflow-training:2.13-cpu-py310": ("framework", "tensorflow", "2.13", "3.10", "tag", "cpu", "training"),
    f"{DLC}/tensorflow-inference:2.13-cpu": ("framework", "tensorflow", "2.13", "3.10", "documented", "cpu", "inference"),
    f"{DLC}/tensorflow-inference:2.19.0-gpu": ("framework", "tensorflow", "2.19.0", "3.12", "documented", "gpu", "inference"),
    f"{DLC}/tensorflow-training:1.15.5-cpu-py37": ("framework", "tensorflow", "1.15.5", "3.7", "tag", "cpu", "training"),
    f"{DLC}/tensorflow-training:1.14.0-cpu-py2": ("framework", "tensorflow", "1.14.0", "2.7", "tag", "cpu", "training"),
    f"{DLC}/tensorflow-training:1.14.0-cpu-py3": ("framework", "tensorflow", "1.14.0", None, None, "cpu", "training"),
    f"{DLC}/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04": (
        "framework", "huggingface", "4.36.0", "3.10", "tag", "gpu", "training",
    ),
    f"{DLC}/huggingface-pytorch-inference:2.6.0-transformers4.51.3-cpu-py312-ubuntu22.04": (
        "framework", "huggingface", "4.51.3", "3.12", "tag", "cpu", "inference",
    ),
    f"{DLC}/huggingface-tensorflow-training:2.6.3-transformers4.17.0-gpu-py38-cu112-ubuntu20.04": (
        "framework", "huggingface", "4.17.0", "3.8", "tag", "gpu", "training",
    ),
    "173754725891.dkr.ecr.us-east-1.amazonaws.com/sagemaker-spark-processing:3.3-cpu": (
        "framework", "spark", "3.3", None, None, "cpu", "processing",
    ),
    "173754725891.dkr.ecr.us-east-1.amazonaws.com/sagemaker-spark-processing:3.5-cpu-py312": (
        "framework", "spark", "3.5", "3.12", "tag", "cpu", "processing",
    ),
    f"{DLC}/mxnet-training:1.9.0-cpu-py38": ("framework", "mxnet", "1.9.0", "3.8", "tag", "cpu", "training"),
    f"{DLC}/autogluon-training:1.5.0-cpu-py311": ("framework", "autogluon", "1.5.0", "3.11", "tag", "cpu", "training"),
    "811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1": ("algorithm", None, "1", None, None, None, None),
    "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1": ("algorithm", None, "1", None, None, None, None),
    "390948362332.dkr.ecr.cn-north-1.amazonaws.com.cn/kmeans:1": ("algorithm", None, "1", None, None, None, None),
    "226302683700.dkr.ecr.us-gov-west-1.amazonaws.com/blazingtext:1": ("algorithm", None, "1", None, None, None, None),
    "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:latest": (
        "algorithm", None, "latest", None, None, None, None,
    ),
    "156813124566.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer": (
        "aws", None, None, None, None, None, None,
    ),
    f"{DLC}/djl-inference:0.31.0-lmi13.0.0-cu124": ("aws", None, None, None, None, None, None),
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-team/trainer:2024-06-01": (
        "custom", None, None, None, None, None, None,
    ),
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:latest": ("custom", None, None, None, None, None, None),
    "python:3.9-slim": ("custom", None, None, None, None, None, None),
    "ghcr.io/acme/pytorch-training:2.5-cpu-py311": ("custom", None, None, None, None, None, None),
    "public.ecr.aws/deep-learning-containers/pytorch-training:2.5-cpu-py311": (
        "framework", "pytorch", "2.5", "3.11", "tag", "cpu", "training",
    ),
    "public.ecr.aws/someone/pytorch-training:2.5-cpu-py311": ("custom", None, None, None, None, None, None),
}  # fmt: skip


@pytest.mark.parametrize("uri", list(CASES))
def test_parse(uri):
    info = parse_image_uri(uri)
    got = (
        info.kind,
        info.framework,
        info.framework_version,
        info.python_version,
        info.python_source,
        info.processor,
        info.scope,
    )
    assert got == CASES[uri]


def test_registry_parts():
    info = parse_image_uri(f"{SK}/sagemaker-scikit-learn:1.2-1-cpu-py3")
    assert (info.account, info.region, info.repository, info.tag) == (
        "683313688378",
        "us-east-1",
        "sagemaker-scikit-learn",
        "1.2-1-cpu-py3",
    )
    assert info.name == "sagemaker-scikit-learn:1.2-1-cpu-py3"
    cn = parse_image_uri("390948362332.dkr.ecr.cn-north-1.amazonaws.com.cn/kmeans:1")
    assert (cn.account, cn.region) == ("390948362332", "cn-north-1")
    fips = parse_image_uri("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/sagemaker-xgboost:1.7-1")
    assert (fips.region, fips.framework) == ("us-gov-west-1", "xgboost")


def test_huggingface_base_framework_and_cuda():
    info = parse_image_uri(
        f"{DLC}/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04"
    )
    assert (info.base_framework, info.base_framework_version) == ("pytorch", "2.1.0")
    assert (info.cuda, info.os) == ("cu121", "ubuntu20.04")
    tf = parse_image_uri(
        f"{DLC}/huggingface-tensorflow-inference:2.11.0-transformers4.26.0-cpu-py39-ubuntu20.04"
    )
    assert (tf.base_framework, tf.base_framework_version, tf.scope) == ("tensorflow", "2.11.0", "inference")


def test_xgboost_framework_image_is_also_the_algorithm():
    info = parse_image_uri(f"{SK}/sagemaker-xgboost:1.7-1")
    assert (info.kind, info.framework, info.algorithm) == ("framework", "xgboost", "xgboost")
    legacy = parse_image_uri("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1")
    assert (legacy.kind, legacy.algorithm) == ("algorithm", "xgboost")


@pytest.mark.parametrize(
    "ref, parts",
    [
        ("python:3.9", (None, "python", "3.9", None)),
        ("localhost:5000/img:tag", ("localhost:5000", "img", "tag", None)),
        ("localhost:5000/img", ("localhost:5000", "img", None, None)),
        ("acme/img@sha256:abc", (None, "acme/img", None, "sha256:abc")),
        (f"{SK}/sagemaker-xgboost:1.7-1@sha256:ff", (SK, "sagemaker-xgboost", "1.7-1", "sha256:ff")),
    ],
)
def test_split(ref, parts):
    assert split_image_uri(ref) == parts


def test_digest_only_name():
    info = parse_image_uri(f"{SK}/sagemaker-xgboost@sha256:0123")
    assert info.name == "sagemaker-xgboost@sha256:0123"
    assert info.kind == "framework"


@pytest.mark.parametrize(
    "token, py", [("py39", "3.9"), ("py312", "3.12"), ("py3", None), ("py2", "2.7"), ("py27", "2.7")]
)
def test_python_tokens(token, py):
    assert python_from_tag_token(token) == py


# -- against the installed SDK -------------------------------------------------------------------------------


def _sdk_config_dir() -> str | None:
    try:
        import sagemaker.core  # noqa: F401  (sagemaker-core ships image_uri_config/)
    except ImportError:
        return None
    import sagemaker.core as core

    path = os.path.join(os.path.dirname(core.__file__), "image_uri_config")
    return path if os.path.isdir(path) else None


def _sdk_repositories() -> dict[str, set[str]]:
    config = _sdk_config_dir()
    if config is None:
        pytest.skip("the SageMaker SDK's image_uri_config is not installed")
    found: dict[str, set[str]] = {}

    def walk(node, name):
        if isinstance(node, dict):
            if isinstance(node.get("repository"), str):
                found.setdefault(node["repository"], set()).add(name)
            for value in node.values():
                walk(value, name)

    for path in glob.glob(os.path.join(config, "*.json")):
        with open(path) as f:
            walk(json.load(f), os.path.basename(path)[:-5])
    return found


def test_every_sdk_repository_is_known():
    """An image the SDK can name is never taken for a custom image."""
    for repository in _sdk_repositories():
        info = parse_image_uri(f"{DLC}/{repository}:1.0-cpu-py310")
        assert info.kind != "custom", repository


def test_builtin_algorithms_are_the_sdks():
    repositories = _sdk_repositories()
    assert set(BUILTIN_ALGORITHMS) <= set(repositories)
    assert not set(BUILTIN_ALGORITHMS) & AWS_REPOSITORIES
    # an algorithm's config: versions "1" / "latest", no Python (py_versions) anywhere
    config = _sdk_config_dir()
    for name in set(BUILTIN_ALGORITHMS) - {"xgboost"}:  # xgboost.json also holds the framework images
        with open(os.path.join(config, f"{name}.json")) as f:
            data = json.load(f)
        assert set(data["versions"]) <= {"1", "latest"}, name
        assert "py_versions" not in json.dumps(data), name


def test_documented_python_covers_every_sdk_version():
    """A new scikit-learn / XGBoost image version in the SDK needs its Python in DOCUMENTED_PYTHON."""
    config = _sdk_config_dir()
    if config is None:
        pytest.skip("the SageMaker SDK's image_uri_config is not installed")
    for framework, json_name in (("sklearn", "sklearn"), ("xgboost", "xgboost")):
        with open(os.path.join(config, f"{json_name}.json")) as f:
            versions = json.load(f)["training"]["versions"]
        for version, entry in versions.items():
            if entry.get("repository", "").startswith("sagemaker-"):
                assert version in DOCUMENTED_PYTHON[framework], (framework, version)


def test_sdk_retrieve_round_trip():
    """What `image_uris.retrieve` was asked for is what the parse reads back."""
    try:
        from sagemaker.core import image_uris
        from sagemaker.core.image_uris import config_for_framework
    except ImportError:
        pytest.skip("sagemaker.core.image_uris is not installed")
    asks = []
    for framework in ("sklearn", "xgboost"):
        for version, entry in config_for_framework(framework)["training"]["versions"].items():
            if entry.get("repository", "").startswith("sagemaker-"):
                asks.append(dict(framework=framework, version=version, py_version="py3"))
    for version in config_for_framework("spark")["processing"]["versions"]:
        asks.append(dict(framework="spark", version=version, image_scope="processing"))
    asks += [
        dict(framework="pytorch", version="2.5", py_version="py311", image_scope="training"),
        dict(framework="pytorch", version="2.6", py_version="py312", image_scope="inference"),
        dict(framework="pytorch", version="1.13", py_version="py39", image_scope="training"),
        dict(framework="tensorflow", version="2.13", py_version="py310", image_scope="training"),
        dict(framework="tensorflow", version="2.19", py_version="py312", image_scope="training"),
        dict(framework="tensorflow", version="2.13", image_scope="inference"),
        dict(framework="mxnet", version="1.9", py_version="py38", image_scope="training"),
        dict(framework="autogluon", version="1.5", py_version="py311", image_scope="training"),
    ]
    for ask in asks:
        kwargs = dict(region="us-west-2", instance_type="ml.m5.xlarge", **ask)
        uri = image_uris.retrieve(**kwargs)
        info = parse_image_uri(uri)
        assert info.kind == "framework", uri
        assert info.framework == ask["framework"], uri
        assert info.region == "us-west-2", uri
        wanted = ask["version"]
        assert info.framework_version == wanted or info.framework_version.startswith(wanted + "."), uri
        py = ask.get("py_version")
        if py and py != "py3":
            assert info.python_version == python_from_tag_token(py), uri
        if ask["framework"] in ("sklearn", "xgboost"):
            assert info.python_version is not None, uri
    hf = image_uris.retrieve(
        framework="huggingface",
        region="us-east-1",
        version="4.36.0",
        base_framework_version="pytorch2.1.0",
        py_version="py310",
        instance_type="ml.p3.2xlarge",
        image_scope="training",
    )
    info = parse_image_uri(hf)
    assert (info.framework, info.framework_version, info.base_framework_version, info.python_version) == (
        "huggingface",
        "4.36.0",
        "2.1.0",
        "3.10",
    )
    for algorithm in ("linear-learner", "kmeans", "blazingtext", "object-detection", "xgboost"):
        info = parse_image_uri(image_uris.retrieve(framework=algorithm, region="us-east-1", version="1"))
        assert (info.kind, info.algorithm) == ("algorithm", algorithm)


def test_studio_base_python_images_name_their_python():
    info = parse_image_uri("081325390199.dkr.ecr.us-east-1.amazonaws.com/sagemaker-base-python-310:1.0")
    assert (info.kind, info.python_version, info.python_source) == ("aws", "3.10", "name")
    assert (
        parse_image_uri("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/sagemaker-base-python-310:1").kind
        == "custom"
    )
