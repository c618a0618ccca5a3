"""What a job's container image URI stands for: registry, repository and tag, the kind of image, and the
framework, framework version and Python version that its tag names.

Pure functions over strings: no I/O. The facts (repository names, documented Python versions) come from the
SageMaker SDK's ``image_uri_config/*.json`` (sagemaker-core 2.27) and from the container repositories'
Dockerfiles; each table below names its source.

    >>> info = parse_image_uri(f"{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3")
    >>> (info.kind, info.framework, info.framework_version, info.python_version, info.python_source)
    ('framework', 'sklearn', '1.2-1', '3.9', 'documented')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["framework", "algorithm", "aws", "custom"]
PythonSource = Literal["tag", "documented"]

# -- facts ---------------------------------------------------------------------------------------------------

# The built-in algorithm repositories: every ``image_uri_config/<name>.json`` of the SDK whose images are a
# SageMaker algorithm (versions "1"/"latest", no framework), plus their Neo-compiled inference variants.
# ``sagemaker-xgboost`` is also the built-in XGBoost algorithm (the framework image run without an entry
# point); ``xgboost`` is the legacy algorithm-only repository (tag "1").
BUILTIN_ALGORITHMS: dict[str, str] = {
    "blazingtext": "blazingtext",
    "factorization-machines": "factorization-machines",
    "forecasting-deepar": "forecasting-deepar",
    "image-classification": "image-classification",
    "image-classification-neo": "image-classification",
    "ipinsights": "ipinsights",
    "kmeans": "kmeans",
    "knn": "knn",
    "lda": "lda",
    "linear-learner": "linear-learner",
    "ntm": "ntm",
    "object-detection": "object-detection",
    "object2vec": "object2vec",
    "pca": "pca",
    "randomcutforest": "randomcutforest",
    "semantic-segmentation": "semantic-segmentation",
    "seq2seq": "seq2seq",
    "xgboost": "xgboost",
    "xgboost-neo": "xgboost",
}

# Framework images: repository name -> (framework, scope). Scope None: one repository for training and
# inference (the first-party framework containers and the legacy ``sagemaker-<framework>`` repositories).
_FRAMEWORK_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^sagemaker-scikit-learn$"), "sklearn"),
    (re.compile(r"^sagemaker-xgboost$"), "xgboost"),
    (re.compile(r"^huggingface-(pytorch|tensorflow)-.+$"), "huggingface"),
    (re.compile(r"^(sagemaker-)?pytorch(-.+)?$"), "pytorch"),
    (re.compile(r"^(sagemaker-)?tensorflow(-.+)?$"), "tensorflow"),
    (re.compile(r"^(sagemaker-)?mxnet(-.+)?$"), "mxnet"),
    (re.compile(r"^sagemaker-spark-processing$"), "spark"),
    (re.compile(r"^autogluon-(training|inference)$"), "autogluon"),
    (re.compile(r"^sagemaker-chainer$"), "chainer"),
]

# Other AWS-owned images in the SDK's config that run their own program (model monitor, clarify, serving
# runtimes for LLMs, RL, Neo, ...): not a framework whose user script a local Python could run.
AWS_REPOSITORIES: frozenset[str] = frozenset(
    {
        "detailed-profiler-processing",
        "djl-inference",
        "huggingface-llamacpp",
        "huggingface-pytorch-tgi-inference",
        "huggingface-sglang",
        "huggingface-vllm",
        "huggingface-vllm-inference-neuronx",
        "huggingface-vllm-omni",
        "llama-cpp",
        "llama-cpp-arm64",
        "ray",
        "sagemaker-base-python",
        "sagemaker-clarify-processing",
        "sagemaker-data-wrangler-container",
        "sagemaker-debugger-rules",
        "sagemaker-distribution-prod",
        "sagemaker-geospatial-v1-0",
        "sagemaker-inference-mxnet",
        "sagemaker-inference-pytorch",
        "sagemaker-inference-tensorflow",
        "sagemaker-inspect-ai",
        "sagemaker-model-monitor-analyzer",
        "sagemaker-neo-mxnet",
        "sagemaker-neo-pytorch",
        "sagemaker-neo-tensorflow",
        "sagemaker-rl-coach-container",
        "sagemaker-rl-mxnet",
        "sagemaker-rl-ray-container",
        "sagemaker-rl-tensorflow",
        "sagemaker-rl-vw-container",
        "sagemaker-sparkml-serving",
        "sagemaker-tritonserver",
        "sglang",
        "smdistributed-modelparallel",
        "stabilityai-pytorch-inference",
        "tei",
        "tei-cpu",
        "vllm",
        "whisperx",
    }
)

# The Python an image ships when its tag says only ``py3`` (or nothing): framework -> image version -> X.Y.
DOCUMENTED_PYTHON: dict[str, dict[str, str]] = {
    # aws/sagemaker-scikit-learn-container, branch <version>: docker/<version>/base/Dockerfile.cpu
    # ``ARG PYTHON_VERSION`` (0.20.0: 3.7.10, 0.23-1: 3.7.10, 1.0-1: 3.8.13, 1.2-1: 3.9, v1.4-2: 3.10,
    # release-1.4-2-py312: 3.12); 1.9-0: aws/deep-learning-containers docker/sklearn/1.9-0/Dockerfile (3.12).
    "sklearn": {
        "0.20.0": "3.7",
        "0.23-1": "3.7",
        "1.0-1": "3.8",
        "1.2-1": "3.9",
        "1.4-2": "3.10",
        "1.4-2-py312": "3.12",
        "1.9-0": "3.12",
    },
    # aws/sagemaker-xgboost-container, branch <version>: docker/<version>/base/Dockerfile.cpu
    # (``ARG PYTHON_VERSION`` / ``conda install python=``: 0.90-2 3.6.13; 0.90-1, 1.0-1, 1.2-1, 1.2-2, 1.3-1
    # 3.7.10; 1.5-1 3.8.13; 1.7-1 3.9); 3.0-5: aws/deep-learning-containers docker/xgboost/3.0-5/Dockerfile
    # (3.10); 3.2-0: docker/xgboost/Dockerfile (3.12).
    "xgboost": {
        "0.90-1": "3.7",
        "0.90-2": "3.6",
        "1.0-1": "3.7",
        "1.2-1": "3.7",
        "1.2-2": "3.7",
        "1.3-1": "3.7",
        "1.5-1": "3.8",
        "1.7-1": "3.9",
        "3.0-5": "3.10",
        "3.2-0": "3.12",
    },
    # TensorFlow Serving tags (``tensorflow-inference:2.13.0-cpu``) name no Python; the DLC release of that
    # TensorFlow minor ships the Python of its training image (SDK tensorflow.json ``py_versions``;
    # deep-learning-containers available_images.md: tensorflow-inference 2.13.0 is py310).
    "tensorflow": {
        **dict.fromkeys(("2.2", "2.3", "2.4", "2.5"), "3.7"),
        **dict.fromkeys(("2.6", "2.7"), "3.8"),
        **dict.fromkeys(("2.8", "2.9", "2.10", "2.11"), "3.9"),
        **dict.fromkeys(("2.12", "2.13", "2.14", "2.15", "2.16", "2.17", "2.18"), "3.10"),
        **dict.fromkeys(("2.19", "2.20", "2.21"), "3.12"),
    },
}

_PROCESSORS = frozenset({"cpu", "gpu", "inf", "inf1", "inf2", "neuron", "neuronx", "trn", "trn1", "trn2"})
_PY = re.compile(r"^py(\d)(\d*)$")
_CUDA = re.compile(r"^cu\d+$")
_OS = re.compile(r"^(ubuntu\d+\.\d+|amzn\d+|al\d+|amazonlinux\d*|debian\d*)$")
_HF_TAG = re.compile(r"^(?P<base>\d+(?:\.\d+)*)-transformers(?P<tv>\d+(?:\.\d+)*)-(?P<rest>.+)$")
# <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn] (and the ISO partitions' domains)
_ECR = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\."
    r"(?:amazonaws\.com(?:\.cn)?|c2s\.ic\.gov|sc2s\.sgov\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)$"
)
_PUBLIC_ECR = "public.ecr.aws"
_PUBLIC_ECR_AWS_ALIASES = ("deep-learning-containers", "sagemaker")  # AWS's own public.ecr.aws namespaces


# -- the parsed image ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    uri: str
    registry: str | None  # host ("<account>.dkr.ecr.<region>.amazonaws.com", "public.ecr.aws", ...)
    account: str | None  # ECR registry account
    region: str | None  # ECR region
    repository: str  # as in the URI, path included ("deep-learning-containers/pytorch-training")
    tag: str | None
    digest: str | None  # "sha256:..."
    kind: Kind
    framework: str | None = None  # sklearn, xgboost, pytorch, tensorflow, huggingface, mxnet, spark, ...
    framework_version: str | None = None  # as the SDK names it: "1.2-1", "2.5", "4.36.0" (transformers)
    base_framework: str | None = None  # huggingface: "pytorch" | "tensorflow"
    base_framework_version: str | None = None  # huggingface: "2.1.0"
    python_version: str | None = None  # "3.9"
    python_source: PythonSource | None = None  # read from the tag, or the image's documented Python
    processor: str | None = None  # cpu, gpu, inf, neuronx, ...
    cuda: str | None = None  # "cu121"
    os: str | None = None  # "ubuntu20.04"
    scope: str | None = None  # training, inference, processing (None: both)
    algorithm: str | None = None  # built-in algorithm name (xgboost for sagemaker-xgboost too)

    @property
    def name(self) -> str:
        """``repository:tag`` (what config patterns match), or ``repository@digest``."""
        if self.tag is not None:
            return f"{self.repository}:{self.tag}"
        return f"{self.repository}@{self.digest}" if self.digest else self.repository

    @property
    def short_repository(self) -> str:
        return self.repository.rsplit("/", 1)[-1]


def python_from_tag_token(token: str) -> str | None:
    """``py39`` -> ``3.9``, ``py312`` -> ``3.12``, ``py2`` -> ``2.7`` (every SageMaker py2 image is 2.7);
    ``py3`` -> None: it names no minor."""
    m = _PY.match(token)
    if not m:
        return None
    if not m.group(2):
        return "2.7" if m.group(1) == "2" else None
    return f"{m.group(1)}.{m.group(2)}"


def split_image_uri(uri: str) -> tuple[str | None, str, str | None, str | None]:
    """``(registry host | None, repository, tag | None, digest | None)`` the way Docker reads a reference."""
    rest, digest = (uri.split("@", 1) + [None])[:2] if "@" in uri else (uri, None)
    registry = None
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    repository, tag = rest, None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        repository, tag = rest[:colon], rest[colon + 1 :]
    return registry, repository, tag or None, digest


def parse_image_uri(uri: str) -> ImageInfo:
    """What ``uri`` stands for. Never raises: anything unrecognised is a ``custom`` image."""
    uri = uri.strip()
    registry, repository, tag, digest = split_image_uri(uri)
    account = region = None
    if registry and (m := _ECR.match(registry)):
        account, region = m.group("account"), m.group("region")
    base = dict(
        uri=uri,
        registry=registry,
        account=account,
        region=region,
        repository=repository,
        tag=tag,
        digest=digest,
    )
    if account is not None and "/" not in repository:
        name = repository
    elif registry == _PUBLIC_ECR and repository.count("/") == 1:
        alias, name = repository.split("/")
        if alias not in _PUBLIC_ECR_AWS_ALIASES:
            return ImageInfo(**base, kind="custom")
    else:  # another registry, or a repository path in ECR: the user's own image
        return ImageInfo(**base, kind="custom")

    framework = next((fw for pattern, fw in _FRAMEWORK_PATTERNS if pattern.match(name)), None)
    if name in AWS_REPOSITORIES:
        framework = None
    if framework is not None:
        return ImageInfo(**base, kind="framework", **_framework_fields(framework, name, tag or ""))
    if name in BUILTIN_ALGORITHMS:
        return ImageInfo(
            **base, kind="algorithm", algorithm=BUILTIN_ALGORITHMS[name], framework_version=tag, scope=None
        )
    if m := BASE_PYTHON.match(name):  # Studio's base Python images (the @step default): the name says X.Y
        py = f"{m.group(1)}.{m.group(2)}"
        return ImageInfo(**base, kind="aws", python_version=py, python_source="name")
    if name in AWS_REPOSITORIES:
        return ImageInfo(**base, kind="aws")
    return ImageInfo(**base, kind="custom")


BASE_PYTHON = re.compile(r"^sagemaker-base-python-(\d)(\d+)$")


# -- tags ----------------------------------------------------------------------------------------------------


def _scope(name: str) -> str | None:
    if "training" in name or name.endswith("-scriptmode"):
        return "training"
    if "inference" in name or "serving" in name:
        return "inference"
    if "processing" in name:
        return "processing"
    return None


def _framework_fields(framework: str, name: str, tag: str) -> dict:
    fields: dict = {"framework": framework, "scope": _scope(name)}
    if framework == "xgboost":
        fields["algorithm"] = "xgboost"
    if framework == "huggingface":
        fields["base_framework"] = "tensorflow" if "-tensorflow-" in name else "pytorch"
        m = _HF_TAG.match(tag)
        if not m:
            return fields
        fields["base_framework_version"] = m.group("base")
        fields["framework_version"] = m.group("tv")
        tokens, version = m.group("rest").split("-"), None
    else:
        tokens = tag.split("-") if tag else []
        cut = next((i for i, t in enumerate(tokens) if t in _PROCESSORS), None)
        if cut is None:  # "1.7-1" (xgboost), "latest": the version runs up to the first non-version token
            cut = next((i for i, t in enumerate(tokens) if not re.match(r"^\d", t)), len(tokens))
        version, tokens = "-".join(tokens[:cut]) or None, tokens[cut:]
        fields["framework_version"] = version
    for token in tokens:
        if token in _PROCESSORS and "processor" not in fields:
            fields["processor"] = token
        elif _PY.match(token) and "python_version" not in fields:
            if py := python_from_tag_token(token):
                fields["python_version"], fields["python_source"] = py, "tag"
        elif _CUDA.match(token):
            fields["cuda"] = token
        elif _OS.match(token):
            fields["os"] = token
    if "python_version" not in fields:
        # sklearn's "1.4-2-py312" names its Python inside the version; else the documented one for py3/none
        inner = re.search(r"-py(\d)(\d+)$", fields.get("framework_version") or "")
        if inner:
            fields["python_version"], fields["python_source"] = f"{inner.group(1)}.{inner.group(2)}", "tag"
        elif py := documented_python(framework, fields.get("framework_version")):
            fields["python_version"], fields["python_source"] = py, "documented"
    return fields


def documented_python(framework: str, version: str | None) -> str | None:
    """The Python X.Y an image of ``framework`` ``version`` ships, from :data:`DOCUMENTED_PYTHON`."""
    if not version:
        return None
    table = DOCUMENTED_PYTHON.get(framework, {})
    if version in table:
        return table[version]
    minor = ".".join(version.split(".")[:2])
    return table.get(minor) if framework == "tensorflow" else None
