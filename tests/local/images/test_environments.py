"""The environment standing in for a job's image: choices, plans, and real uv builds with real interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlops.local.images import environments as envs
from mlops.local.images.environments import (
    CONFIG_KEY,
    META,
    ImageEnvError,
    ImageEnvRule,
    check,
    choose,
    failure_hint,
    prepare,
    resolve,
    rules_from_config,
)
from mlops.local.images.image_uri import parse_image_uri

ROOT = Path(__file__).resolve().parents[3]
SK = "683313688378.dkr.ecr.us-east-1.amazonaws.com"
DLC = "763104351884.dkr.ecr.us-east-1.amazonaws.com"
SKLEARN = f"{SK}/sagemaker-scikit-learn:1.2-1-cpu-py3"
PROJECT_MINOR = f"{sys.version_info[0]}.{sys.version_info[1]}"
HAS_UV = envs.find_uv() is not None
needs_uv = pytest.mark.skipif(not HAS_UV, reason="uv is not installed (pip install uv)")


def _python_available(version: str) -> bool:
    try:
        envs.find_interpreter(version)
    except ImageEnvError:
        return False
    return True


# -- rules -----------------------------------------------------------------------------------------------


def test_rules_come_first_and_the_first_match_wins():
    rules = [
        ImageEnvRule("sagemaker-scikit-learn:1.2-1-*", python="/opt/py39/bin/python3.9"),
        ImageEnvRule("sagemaker-scikit-learn:*", use_project=True),
    ]
    choice = choose(SKLEARN, rules)
    assert (choice.mode, choice.origin, choice.python) == ("interpreter", "rule", "/opt/py39/bin/python3.9")
    assert choice.rule is rules[0]
    other = choose(f"{SK}/sagemaker-scikit-learn:1.0-1-cpu-py3", rules)
    assert (other.mode, other.rule) == ("project", rules[1])
    assert choose(f"{SK}/sagemaker-xgboost:1.7-1", rules).origin == "default"


def test_a_requirements_rule_takes_the_images_python_or_the_projects():
    rule = ImageEnvRule("*", requirements=["pandas<2"])
    sk = choose(SKLEARN, [rule])
    assert (sk.mode, sk.python, sk.requirements) == ("uv", "3.9", ("pandas<2",))
    custom = choose("123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:7", [rule])
    assert custom.python == PROJECT_MINOR
    pinned = choose(SKLEARN, [ImageEnvRule("*", python="3.10", requirements=["pandas<2"])])
    assert pinned.python == "3.10"


def test_a_pattern_with_a_slash_matches_the_whole_uri():
    rule = ImageEnvRule("123456789012.dkr.ecr.*/trainer:*", use_project=True)
    assert choose("123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:7", [rule]).origin == "rule"
    assert choose("999999999999.dkr.ecr.us-east-1.amazonaws.com/trainer:7", [rule]).origin == "fallback"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(use_project=True, python="3.9"),
        dict(use_project=True, requirements=["x"]),
        dict(),
        dict(python="python-three"),
    ],
)
def test_bad_rules(kwargs):
    with pytest.raises(ValueError):
        ImageEnvRule("x:*", **kwargs)


def test_rules_from_config():
    rules = rules_from_config(
        {
            "pytorch-training:*": "project",
            "sagemaker-scikit-learn:0.23-1-*": "/opt/py37/bin/python3.7",
            "my-image:*": ["pandas==1.5.3"],
            "sagemaker-xgboost:*": {"python": "3.10", "requirements": ["xgboost==1.7.4"]},
        }
    )
    assert [r.use_project for r in rules] == [True, False, False, False]
    assert rules[1].python == "/opt/py37/bin/python3.7"
    assert rules[2].requirements == ["pandas==1.5.3"]
    assert (rules[3].python, rules[3].requirements) == ("3.10", ["xgboost==1.7.4"])
    with pytest.raises(ImageEnvError, match=r"local\.images\.x:\*: unknown keys"):
        rules_from_config({"x:*": {"pyhton": "3.9"}})
    with pytest.raises(ImageEnvError, match="as a string"):  # YAML reads 3.10 as 3.1
        rules_from_config({"x:*": {"python": 3.10}})


# -- defaults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", list(envs.SKLEARN_IMAGES))
def test_sklearn_defaults(version):
    choice = choose(f"{SK}/sagemaker-scikit-learn:{version}-cpu-py3")
    assert (choice.mode, choice.origin, choice.only_binary) == ("uv", "default", True)
    assert choice.python == parse_image_uri(f"{SK}/sagemaker-scikit-learn:{version}-cpu-py3").python_version
    names = [r.split("=")[0].split(">")[0] for r in choice.requirements]
    assert names == [
        "scikit-learn",
        "pandas",
        "numpy",
        "scipy",
        "pyarrow",
        "sagemaker-training",
        "boto3",
        "requests",
    ]
    assert "sagemaker-training" in choice.source_packages


def test_the_sklearn_1_2_default_is_the_images():
    choice = choose(SKLEARN)
    assert choice.python == "3.9"
    assert "scikit-learn==1.2.1" in choice.requirements
    assert "pandas==1.1.3" in choice.requirements
    assert choice.summary().startswith("uv env py3.9 scikit-learn==1.2.1 pandas==1.1.3")


@pytest.mark.parametrize("version", list(envs.XGBOOST_IMAGES))
def test_xgboost_defaults(version):
    choice = choose(f"{SK}/sagemaker-xgboost:{version}")
    assert (choice.mode, choice.origin) == ("uv", "default")
    assert choice.python is not None
    assert choice.requirements[0].startswith(("xgboost==", "xgboost-cpu=="))
    # the launcher's framework mode runs sagemaker-training (the images ship sagemaker-containers)
    assert any(r.startswith("sagemaker-training==") for r in choice.requirements)
    assert "sagemaker-training" in choice.source_packages


def test_xgboost_3_takes_the_cpu_wheel():
    assert choose(f"{SK}/sagemaker-xgboost:3.0-5").requirements[0] == "xgboost-cpu==3.0.5"
    assert choose(f"{SK}/sagemaker-xgboost:1.7-1").requirements[0] == "xgboost==1.7.4"


def test_pytorch_images_run_on_the_project_env_and_say_so():
    choice = choose(f"{DLC}/pytorch-training:2.5-cpu-py311")
    assert (choice.mode, choice.origin) == ("project", "fallback")
    assert "the image's torch 2.5" in choice.stands_in
    env = prepare(choice)
    assert env.python == Path(sys.executable)
    assert Path(os.path.realpath(sys.base_prefix)) in env.prefixes or any(
        Path(os.path.realpath(sys.base_prefix)).is_relative_to(p) for p in env.prefixes
    )
    hint = failure_hint(env)
    assert "pytorch-training:2.5-cpu-py311" in hint and "the image's torch 2.5" in hint
    assert CONFIG_KEY in hint
    torch_version = envs._project_version("torch")
    if torch_version:
        assert f"torch {torch_version}" in hint


def test_tensorflow_default():
    choice = choose(f"{DLC}/tensorflow-training:2.13-cpu-py310")
    assert (choice.mode, choice.python) == ("uv", "3.10")
    assert choice.requirements[:3] == ("tensorflow-cpu==2.13.*", "sagemaker-training", "boto3")
    assert {"pandas", "scikit-learn", "requests"} <= set(choice.requirements)  # what the image carries too
    assert choose(f"{DLC}/tensorflow-inference:2.13.0-cpu").python == "3.10"  # documented
    assert choose(f"{DLC}/tensorflow-training:1.15.5-cpu-py37").requirements[0] == "tensorflow==1.15.*"


def test_huggingface_defaults():
    pt = choose(f"{DLC}/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04")
    assert (pt.mode, pt.requirements, pt.excludes) == (
        "overlay",
        ("transformers==4.36.0",),
        ("torch", "torchvision", "torchaudio"),
    )
    assert "the image's torch 2.1.0" in pt.stands_in
    tf = choose(f"{DLC}/huggingface-tensorflow-training:2.6.3-transformers4.17.0-gpu-py38-cu112-ubuntu20.04")
    assert (tf.mode, tf.python, tf.requirements) == (
        "uv",
        "3.8",
        ("transformers==4.17.0", "tensorflow-cpu==2.6.*"),
    )


@pytest.mark.parametrize(
    "uri, why",
    [
        ("173754725891.dkr.ecr.us-east-1.amazonaws.com/sagemaker-spark-processing:3.3-cpu-py39", "spark"),
        (f"{DLC}/mxnet-training:1.9.0-cpu-py38", "mxnet"),
        ("382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1", "linear-learner"),
        ("156813124566.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer", "AWS image"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:7", "custom"),
        (f"{SK}/sagemaker-scikit-learn:9.9-9-cpu-py3", "no default for scikit-learn image 9.9-9"),
    ],
)
def test_everything_else_runs_on_the_project_env(uri, why):
    choice = choose(uri)
    assert (choice.mode, choice.origin) == ("project", "fallback")
    assert why in choice.note
    assert check(uri) == []


def test_an_unknown_python_is_a_blocker():
    uri = f"{DLC}/tensorflow-training:1.14.0-cpu-py3"  # py3: no minor named, none documented
    [blocker] = check(uri)
    assert "tensorflow-training:1.14.0-cpu-py3" in blocker and CONFIG_KEY in blocker
    with pytest.raises(ImageEnvError, match="is not known"):
        prepare(uri)


# -- locks (resolution only: nothing big is downloaded) -------------------------------------------------


@needs_uv
def test_tensorflow_lock(tmp_path):
    choice = choose(f"{DLC}/tensorflow-training:2.13-cpu-py310")
    if not _python_available("3.10"):
        pytest.skip("no Python 3.10 here")
    lock = resolve(choice, tmp_path)
    assert lock["tensorflow-cpu"].startswith("2.13.")
    assert "sagemaker-training" in lock
    assert not any(name.startswith("nvidia-") for name in lock)


@needs_uv
def test_huggingface_pytorch_overlay_lock_leaves_torch_to_the_project(tmp_path):
    choice = choose(
        f"{DLC}/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04"
    )
    lock = resolve(choice, tmp_path)
    assert lock["transformers"] == "4.36.0"
    assert "torch" not in lock and not any(name.startswith("nvidia-") for name in lock)


@needs_uv
@pytest.mark.slow
def test_every_sklearn_and_xgboost_default_resolves(tmp_path):
    """The pinned facts are installable on the image's Python: every default locks (wheels only)."""
    uris = [f"{SK}/sagemaker-scikit-learn:{v}-cpu-py3" for v in envs.SKLEARN_IMAGES]
    uris += [f"{SK}/sagemaker-xgboost:{v}" for v in envs.XGBOOST_IMAGES]
    choices = [c for c in map(choose, uris) if _python_available(c.python)]

    def lock(choice):
        try:
            resolve(choice, tmp_path / choice.image.tag)
        except ImageEnvError as err:
            return str(err)
        return None

    with ThreadPoolExecutor(max_workers=6) as pool:  # each lock waits on PyPI, not on the CPU
        failures = [f for f in pool.map(lock, choices) if f]
    assert failures == []
    assert len(choices) >= len(uris) - 2  # the interpreters are there to check the facts on


# -- interpreters ----------------------------------------------------------------------------------------


def test_a_missing_interpreter_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "uv-python"))
    monkeypatch.setenv(envs.CACHE_ENV, str(tmp_path / "envs"))
    envs.probe.cache_clear()
    uri = f"{SK}/sagemaker-scikit-learn:0.23-1-cpu-py3"  # Python 3.7
    with pytest.raises(ImageEnvError) as err:
        prepare(uri)
    message = str(err.value)
    assert "\n" not in message
    assert "sagemaker-scikit-learn:0.23-1-cpu-py3" in message and "Python 3.7" in message
    assert f"config {CONFIG_KEY}" in message and '"sagemaker-scikit-learn:0.23-1*"' in message
    assert check(uri) == [message]
    assert not (tmp_path / "envs").exists()  # nothing is created for an env that cannot be built


def test_an_explicit_interpreter_runs_as_it_is():
    rule = ImageEnvRule("*", python=sys.executable)
    env = prepare(choose(SKLEARN, [rule]))
    assert env.python == Path(sys.executable)
    assert env.python_version == ".".join(map(str, sys.version_info[:3]))
    assert env.key is None and env.path is None
    missing = ImageEnvRule("*", python="/nonexistent/python3.9")
    [blocker] = check(SKLEARN, [missing])
    assert "/nonexistent/python3.9" in blocker and "does not exist" in blocker


def test_interpreters_are_found_by_version():
    interp = envs.find_interpreter(PROJECT_MINOR)
    assert interp.minor == PROJECT_MINOR
    assert interp.executable.exists()


# -- real builds -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory):
    """One env cache for the session: the scikit-learn image's env is built once."""
    return tmp_path_factory.mktemp("mlops-envs")


@pytest.fixture(scope="session")
def sklearn_build(env_cache):
    if not HAS_UV:
        pytest.skip("uv is not installed")
    if not _python_available("3.9"):
        pytest.skip("no Python 3.9 here")
    lines: list[str] = []
    env = prepare(SKLEARN, cache=env_cache, on_progress=lines.append)
    return env, lines


def test_sklearn_image_env_is_the_images(sklearn_build):
    env, lines = sklearn_build
    assert env.built
    assert env.python_version.startswith("3.9.")
    assert env.packages["scikit-learn"] == "1.2.1" and env.packages["pandas"] == "1.1.3"
    script = textwrap.dedent(
        """
        import io, json, sklearn, pandas, numpy
        frame = pandas.read_csv(io.StringIO("a,b\\n1,2\\n3,4,5\\n"), error_bad_lines=False)
        print(json.dumps({"sklearn": sklearn.__version__, "pandas": pandas.__version__, "rows": len(frame)}))
        """
    )
    out = subprocess.run(
        [str(env.python), "-I", "-c", script], capture_output=True, text=True, check=True, cwd="/"
    )
    got = json.loads(out.stdout)
    assert got["sklearn"].startswith("1.2.") and got["pandas"] == "1.1.3" and got["rows"] == 1
    # progress: a line per phase
    text = "\n".join(lines)
    for phase in ("resolving 8 requirements", "resolved", "installing", "compiling bytecode", "done in"):
        assert phase in text, phase
    # the sandbox mounts: the env and the base interpreter's prefix (the venv's python links to it)
    real_python = Path(os.path.realpath(env.python))
    assert any(real_python.is_relative_to(p) for p in env.prefixes if p != env.path)
    assert env.path in env.prefixes
    assert "sagemaker-scikit-learn:1.2-1-cpu-py3 -> uv env py3.9 scikit-learn==1.2.1 pandas==1.1.3" in (
        env.description
    )
    assert env.key in env.description
    # tracebacks name the env's final path, not the temp dir it was built in
    tb = subprocess.run(
        [str(env.python), "-I", "-c", "import pandas; pandas.read_csv('/nonexistent.csv')"],
        capture_output=True,
        text=True,
    )
    assert str(env.path) in tb.stderr and ".build-" not in tb.stderr


def test_sklearn_image_env_is_reused(sklearn_build, env_cache):
    env, _ = sklearn_build
    before = os.stat(env.path)
    meta = (env.path / META).read_text()
    again = prepare(SKLEARN, cache=env_cache, on_progress=lambda line: pytest.fail(f"rebuilt: {line}"))
    after = os.stat(again.path)
    assert not again.built
    assert again.path == env.path and again.python == env.python
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert (env.path / META).read_text() == meta
    assert check(SKLEARN, cache=env_cache) == []
    assert sorted(p.name for p in env_cache.iterdir() if not p.name.startswith(".")) == [env.key]


def test_sklearn_failure_hint(sklearn_build):
    env, _ = sklearn_build
    hint = failure_hint(env)
    assert "\n" not in hint
    assert "sagemaker-scikit-learn:1.2-1-cpu-py3" in hint and "scikit-learn==1.2.1" in hint
    assert f"config {CONFIG_KEY}" in hint


# Small envs (six on the project's Python) for the lock and the kill: a child process builds one.
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from mlops.local.images import environments as envs

    kill_at, pause_at = os.environ.get("KILL_AT"), os.environ.get("PAUSE_AT")

    def progress(line):
        print("progress: " + line, flush=True)
        if kill_at and line.startswith(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        if pause_at and line.startswith(pause_at):
            time.sleep(3)

    rule = envs.ImageEnvRule("*", python=os.environ["PY"], requirements=["six"])
    env = envs.prepare(envs.choose("123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:7", [rule]),
                       on_progress=progress)
    print("result: " + json.dumps({"built": env.built, "path": str(env.path), "ino": os.stat(env.path).st_ino}))
    """
)


def _child(cache: Path, **extra: str) -> subprocess.Popen:
    env = {**os.environ, envs.CACHE_ENV: str(cache), "PY": PROJECT_MINOR, **extra}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _result(output: str) -> dict:
    [line] = [ln for ln in output.splitlines() if ln.startswith("result: ")]
    return json.loads(line[len("result: ") :])


@needs_uv
def test_concurrent_builders_make_one_env(tmp_path):
    cache = tmp_path / "envs"
    first = _child(cache, PAUSE_AT="installing")
    assert first.stdout is not None
    head = []
    for line in first.stdout:  # the first holds the key's lock once it says it is building
        head.append(line)
        if "progress: building the environment" in line:
            break
    second = _child(cache)
    out_second, _ = second.communicate(timeout=300)
    out_first = "".join(head) + first.communicate(timeout=300)[0]
    assert first.returncode == 0 and second.returncode == 0, out_first + out_second
    a, b = _result(out_first), _result(out_second)
    assert (a["built"], b["built"]) == (True, False)
    assert a["path"] == b["path"] and a["ino"] == b["ino"]
    assert "waiting for another build" in out_second
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [Path(a["path"]).name]
    assert not list(cache.glob(".build-*"))


@needs_uv
def test_a_failed_build_is_one_line_and_leaves_nothing(tmp_path):
    rule = ImageEnvRule("*", python=PROJECT_MINOR, requirements=["mlops-no-such-package-anywhere==1.0"])
    lines: list[str] = []
    with pytest.raises(ImageEnvError) as err:
        prepare(choose(SKLEARN, [rule]), cache=tmp_path, on_progress=lines.append)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("building the environment for image sagemaker-scikit-learn:1.2-1-cpu-py3")
    assert "failed at resolving" in message and "mlops-no-such-package-anywhere" in message
    assert err.value.details  # uv's output, for a log
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
    assert not list(tmp_path.glob(".build-*"))


@needs_uv
@pytest.mark.parametrize("phase", ["installing", "compiling bytecode"])
def test_a_killed_build_leaves_no_env(tmp_path, phase):
    cache = tmp_path / "envs"
    killed = _child(cache, KILL_AT=phase)
    out, _ = killed.communicate(timeout=300)
    assert killed.returncode == -9, out
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []  # nothing in place
    assert list(cache.glob(".build-*"))  # the temp dir of the killed build
    retry = _child(cache)
    out, _ = retry.communicate(timeout=300)
    assert retry.returncode == 0, out
    result = _result(out)
    assert result["built"] and (Path(result["path"]) / META).is_file()
    assert not list(cache.glob(".build-*"))  # the next builder cleared the leftovers


# -- a job's own requirements.txt and the base Python images ----------------------------------------------
BASE_PYTHON = "081325390199.dkr.ecr.us-east-1.amazonaws.com/sagemaker-base-python-310:1.0"


def test_the_base_python_image_gets_its_python_with_pip_and_boto3():
    choice = choose(BASE_PYTHON)
    assert (choice.mode, choice.origin, choice.python) == ("uv", "default", "3.10")
    assert {"pip", "boto3"} <= set(choice.requirements)
    assert choice.note == "default for the base Python 3.10 image"


def test_requirements_lines_keep_specifiers_and_leave_the_rest_to_pip():
    text = textwrap.dedent(
        """\
        # comment
        sagemaker>=v2.211.0,<3
        pandas>=2.0.0  # why
        --extra-index-url https://example.invalid/simple
        -r other.txt
        -e .
        ./wheels/pkg-1.0-py3-none-any.whl
        git+https://github.com/org/repo.git
        numpy ; python_version >= "3.8"
        """
    )
    kept, skipped = envs.requirements_lines(text)
    assert kept == ["sagemaker>=v2.211.0,<3", "pandas>=2.0.0", 'numpy ; python_version >= "3.8"']
    assert skipped == [
        "--extra-index-url https://example.invalid/simple", "-r other.txt", "-e .",
        "./wheels/pkg-1.0-py3-none-any.whl", "git+https://github.com/org/repo.git",
    ]  # fmt: skip


def test_with_requirements_per_mode():
    uv = envs.with_requirements(
        choose(SKLEARN), ["python-slugify==8.0.4"], "requirements.txt of s3://b/x.tar.gz"
    )
    base = choose(SKLEARN)
    assert uv.mode == "uv" and uv.requirements == (*base.requirements, "pip", "python-slugify==8.0.4")
    assert uv.note.endswith("with requirements.txt of s3://b/x.tar.gz")
    assert envs.cache_key(uv) != envs.cache_key(base)  # its own cached env, never the image's default one
    # the project's environment (a PyTorch image): an overlay that leaves torch to the project
    overlay = envs.with_requirements(choose(f"{DLC}/pytorch-training:2.5-cpu-py311"), ["slugify"], "r.txt")
    assert (overlay.mode, overlay.requirements, overlay.excludes) == ("overlay", ("slugify",), ("torch",))
    # an interpreter mapped as it is stays as it is; no requirements change nothing
    rule = ImageEnvRule("custom:*", python=sys.executable)
    mapped = choose("custom:1", [rule])
    assert envs.with_requirements(mapped, ["x"], "r.txt") is mapped
    assert envs.with_requirements(base, [], "r.txt") is base
    # pip is not added twice
    again = envs.with_requirements(choose(BASE_PYTHON), ["pip>=23"], "r.txt")
    assert [r for r in again.requirements if r.startswith("pip")] == ["pip", "pip>=23"]
