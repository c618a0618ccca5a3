"""AWS CodeBuild, on this machine: a ``buildspec.yml`` (version 0.2) run the way CodeBuild runs it.

:func:`load_buildspec` reads and checks the file (one-line :class:`BuildspecError` naming the field, before
anything runs); :func:`run_build` downloads the source as CodeBuild does (a fresh ``git clone`` of a
repository and branch into a work directory, never the caller's checkout), sets CodeBuild's environment
variables, runs the phases in one shell and collects reports and artifacts.

What it follows from the buildspec reference and the build-phase transitions:

* ``env.variables`` < the project's variables < ``environmentVariablesOverride`` (lowest to highest);
  ``env.shell`` is ``bash`` or ``/bin/sh`` (the default).
* ``phases``: install, pre_build, build, post_build, in this order. In version 0.2 every command of the
  build runs in the same shell instance, so ``cd`` and ``export`` carry over from command to command and
  from phase to phase. A phase stops at its first failing command; its ``finally`` commands run whether its
  ``commands`` failed or not. ``on-failure: ABORT`` (the default): a failed install or pre_build skips the
  later phases and the artifact upload; a failed build still runs post_build. ``on-failure: CONTINUE``
  goes on to the next phase. ``CODEBUILD_BUILD_SUCCEEDING`` is ``1`` until a phase fails, then ``0``.
* ``UPLOAD_ARTIFACTS`` is attempted once BUILD was reached, even when BUILD failed: ``reports`` (JUNITXML
  files are parsed and summarised) and ``artifacts`` (``files`` globs, ``base-directory``,
  ``discard-paths``, ``name``), copied into a local directory, optionally zipped. ``cache.paths`` is
  accepted and not used (there is no cache between local builds).
* ``runtime-versions`` is accepted and logged; a ``python`` version is checked against the build
  environment's ``python3`` (a warning when its major.minor differs: nothing is installed locally).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import getpass
import os
import re
import selectors
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlops.errors import MlopsError

PHASES = ("install", "pre_build", "build", "post_build")
TOP_KEYS = {"version", "run-as", "env", "proxy", "batch", "phases", "reports", "artifacts", "cache"}
PHASE_KEYS = {"run-as", "on-failure", "runtime-versions", "commands", "finally"}
ENV_KEYS = {
    "shell",
    "variables",
    "parameter-store",
    "exported-variables",
    "secrets-manager",
    "git-credential-helper",
}
REPORT_KEYS = {"files", "base-directory", "discard-paths", "file-format"}
ARTIFACT_KEYS = {
    "files",
    "name",
    "base-directory",
    "discard-paths",
    "exclude-paths",
    "enable-symlinks",
    "s3-prefix",
}
REPORT_FORMATS = {"JUNITXML", "CUCUMBERJSON", "NUNITXML", "NUNIT3XML", "TESTNGXML", "VISUALSTUDIOTRX"}
SHELLS = {"bash": "bash", "/bin/sh": "/bin/sh"}
ON_FAILURE = ("ABORT", "CONTINUE")

# What ties a process to the caller's checkout: never handed to the build (the container has its own).
_NOT_INHERITED = re.compile(r"^(MLOPS_.*|VIRTUAL_ENV|PYTHONPATH|PYTHONHOME|PYTEST_.*|CODEBUILD_.*)$")


class BuildspecError(MlopsError):
    """A buildspec that CodeBuild would refuse: names the file and the field."""

    exit_code = 2


class BuildFailed(MlopsError):
    """The build ran and failed: names the phase and the command."""


# ------------------------------------------------------------------------------------------- the buildspec


@dataclass(frozen=True)
class Phase:
    name: str
    commands: tuple[str, ...] = ()
    finally_: tuple[str, ...] = ()
    on_failure: str = "ABORT"
    runtime_versions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportGroup:
    name: str
    files: tuple[str, ...]
    base_directory: str = ""
    discard_paths: bool = False
    file_format: str = "JUNITXML"


@dataclass(frozen=True)
class Artifacts:
    files: tuple[str, ...]
    base_directory: str = ""
    discard_paths: bool = False
    name: str = ""
    exclude_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Buildspec:
    source: str
    shell: str
    variables: Mapping[str, str]
    phases: Mapping[str, Phase]
    reports: tuple[ReportGroup, ...] = ()
    artifacts: Artifacts | None = None
    cache_paths: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()  # sections accepted but not acted on locally


def load_buildspec(path: Path) -> Buildspec:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BuildspecError(f"{path}: cannot read the buildspec ({exc.strerror or exc})") from None
    return parse_buildspec(text, str(path))


def parse_buildspec(text: str, source: str = "buildspec.yml") -> Buildspec:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        reason = getattr(exc, "problem", None) or "invalid YAML"
        raise BuildspecError(f"{source}: not valid YAML{where}: {reason}") from None
    if not isinstance(doc, dict):
        raise BuildspecError(f"{source}: a buildspec is a YAML mapping with version and phases")

    def fail(key: str, reason: str):
        raise BuildspecError(f"{source}: {key}: {reason}")

    for key in doc:
        if key not in TOP_KEYS:
            fail(str(key), f"unknown key (a buildspec has {', '.join(sorted(TOP_KEYS))})")
    if "version" not in doc:
        fail("version", "missing (CodeBuild needs version: 0.2)")
    if str(doc["version"]) != "0.2":
        fail("version", f"{doc['version']!r} is not supported here (only 0.2: one shell for the whole build)")

    env = _mapping(doc.get("env"), "env", fail)
    for key in env:
        if key not in ENV_KEYS:
            fail(f"env.{key}", f"unknown key (env has {', '.join(sorted(ENV_KEYS))})")
    shell = env.get("shell", "/bin/sh")
    if shell not in SHELLS:
        fail("env.shell", f"{shell!r} is not a Linux shell CodeBuild supports (bash, /bin/sh)")
    variables = {}
    for name, value in _mapping(env.get("variables"), "env.variables", fail).items():
        if isinstance(value, (dict, list)) or value is None:
            fail(f"env.variables.{name}", "a variable's value is a string")
        variables[str(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    ignored = [
        f"env.{key}" for key in ("parameter-store", "secrets-manager", "exported-variables") if key in env
    ]

    phases_doc = _mapping(doc.get("phases"), "phases", fail)
    if not phases_doc:
        fail("phases", "missing (a buildspec runs at least one phase)")
    phases = {}
    for name, body in phases_doc.items():
        if name not in PHASES:
            fail(f"phases.{name}", f"unknown phase (phases are {', '.join(PHASES)})")
        body = _mapping(body, f"phases.{name}", fail)
        for key in body:
            if key not in PHASE_KEYS:
                fail(f"phases.{name}.{key}", f"unknown key (a phase has {', '.join(sorted(PHASE_KEYS))})")
        on_failure = str(body.get("on-failure", "ABORT"))
        if on_failure not in ON_FAILURE:
            fail(f"phases.{name}.on-failure", f"{on_failure!r} is not one of {', '.join(ON_FAILURE)}")
        runtimes = _mapping(body.get("runtime-versions"), f"phases.{name}.runtime-versions", fail)
        if runtimes and name != "install":
            fail(f"phases.{name}.runtime-versions", "only the install phase selects runtime versions")
        phases[name] = Phase(
            name=name,
            commands=_commands(body.get("commands"), f"phases.{name}.commands", fail),
            finally_=_commands(body.get("finally"), f"phases.{name}.finally", fail),
            on_failure=on_failure,
            runtime_versions={str(k): str(v) for k, v in runtimes.items()},
        )

    reports = []
    for group, body in _mapping(doc.get("reports"), "reports", fail).items():
        body = _mapping(body, f"reports.{group}", fail)
        for key in body:
            if key not in REPORT_KEYS:
                fail(
                    f"reports.{group}.{key}",
                    f"unknown key (a report group has {', '.join(sorted(REPORT_KEYS))})",
                )
        fmt = str(body.get("file-format", "JUNITXML"))
        if fmt not in REPORT_FORMATS:
            fail(f"reports.{group}.file-format", f"{fmt!r} is not one of {', '.join(sorted(REPORT_FORMATS))}")
        reports.append(
            ReportGroup(
                name=str(group),
                files=_globs(body.get("files"), f"reports.{group}.files", fail),
                base_directory=_directory(
                    body.get("base-directory"), f"reports.{group}.base-directory", fail
                ),
                discard_paths=_yes_no(body.get("discard-paths"), f"reports.{group}.discard-paths", fail),
                file_format=fmt,
            )
        )

    artifacts = None
    if doc.get("artifacts") is not None:
        body = _mapping(doc["artifacts"], "artifacts", fail)
        for key in body:
            if key == "secondary-artifacts":
                ignored.append("artifacts.secondary-artifacts")
            elif key not in ARTIFACT_KEYS:
                fail(f"artifacts.{key}", f"unknown key (artifacts has {', '.join(sorted(ARTIFACT_KEYS))})")
        name = str(body.get("name") or "")
        if "/" in name or name in (".", ".."):
            fail("artifacts.name", f"{name!r} is not a file name")
        artifacts = Artifacts(
            files=_globs(body.get("files"), "artifacts.files", fail),
            base_directory=_directory(body.get("base-directory"), "artifacts.base-directory", fail),
            discard_paths=_yes_no(body.get("discard-paths"), "artifacts.discard-paths", fail),
            name=name,
            exclude_paths=_globs(body["exclude-paths"], "artifacts.exclude-paths", fail)
            if body.get("exclude-paths")
            else (),
        )

    cache = _mapping(doc.get("cache"), "cache", fail)
    cache_paths = _globs(cache["paths"], "cache.paths", fail) if cache.get("paths") else ()
    return Buildspec(
        source=source,
        shell=SHELLS[shell],
        variables=variables,
        phases=phases,
        reports=tuple(reports),
        artifacts=artifacts,
        cache_paths=cache_paths,
        ignored=tuple(ignored),
    )


def _mapping(value, key, fail) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(key, f"expected a mapping, got {type(value).__name__}")
    return value


def _commands(value, key, fail) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        fail(key, f"expected a list of commands, got {type(value).__name__}")
    for i, command in enumerate(value):
        if isinstance(command, dict):
            fail(f"{key}[{i}]", "reads as a mapping, not a command: quote a command that contains ': '")
        if not isinstance(command, str) or not command.strip():
            fail(f"{key}[{i}]", "a command is a non-empty string")
    return tuple(value)


def _globs(value, key, fail) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        fail(key, "expected a list of paths or globs")
    for pattern in value:
        if ".." in Path(pattern).parts:
            fail(key, f"{pattern!r} leaves its base directory")
    return tuple(value)


def _directory(value, key, fail) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or ".." in Path(value).parts:
        fail(key, f"{value!r} is not a directory inside the source")
    return value


def _yes_no(value, key, fail) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):  # PyYAML reads YAML 1.1's yes/no as booleans
        return value
    if str(value).lower() in ("yes", "no", "true", "false"):
        return str(value).lower() in ("yes", "true")
    fail(key, f"{value!r} is not yes or no")


# ------------------------------------------------------------------------------------------- the build


@dataclass(frozen=True)
class Source:
    """What a webhook push hands CodeBuild: the repository and the branch that was pushed."""

    repo: str
    branch: str


@dataclass
class PhaseResult:
    name: str
    status: str  # SUCCEEDED | FAILED | SKIPPED
    seconds: float = 0.0
    failed_command: str | None = None
    exit_code: int | None = None


@dataclass
class ReportSummary:
    group: str
    files: list[str]
    total: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    problem: str = ""


@dataclass
class BuildResult:
    build_id: str
    status: str  # SUCCEEDED | FAILED
    work_dir: Path
    src_dir: Path
    log_path: Path
    phases: list[PhaseResult]
    reports: list[ReportSummary] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)
    artifacts_dir: Path | None = None
    zip_path: Path | None = None
    reason: str = ""
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


def container_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The build container's own environment, from this machine's: what points at the caller's checkout
    (its virtualenv, ``MLOPS_*`` project and home variables, pytest's) does not travel."""
    env = {k: v for k, v in environ.items() if not _NOT_INHERITED.match(k)}
    venv = environ.get("VIRTUAL_ENV")
    if venv and "PATH" in env:
        env["PATH"] = os.pathsep.join(
            p for p in env["PATH"].split(os.pathsep) if p != str(Path(venv) / "bin")
        )
    env.setdefault("PATH", os.defpath)
    return env


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``K=V`` pairs (``environmentVariablesOverride``); ``K=`` sets an empty value."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise BuildspecError(f"--env {pair!r}: expects NAME=VALUE with a shell variable name")
        out[name] = value
    return out


class _Log:
    """The build log: CodeBuild's ``[Container] <time>`` agent lines between the commands' own output,
    written to the log file and handed to ``echo`` (the terminal) as they come."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("a", encoding="utf-8")
        self.echo = echo

    def line(self, text: str) -> None:
        self.file.write(text + "\n")
        self.file.flush()
        if self.echo:
            self.echo(text)

    def agent(self, text: str) -> None:
        stamp = dt.datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")
        self.line(f"[Container] {stamp} {text}")

    def close(self) -> None:
        self.file.close()


# The shell that runs every command of the build: it sources each command's script in itself (state
# carries), and reports the status on a pipe of its own; the commands never see the two control pipes.
_DRIVER = """\
exec 8<&0 9>&2 </dev/null 2>&1
while IFS= read -r __codebuild_command <&8; do
  . "$__codebuild_command" 8<&- 9>&-
  printf '%s\\n' "$?" >&9
done
"""


class _Shell:
    """One shell instance for the whole build (buildspec 0.2)."""

    def __init__(self, shell: str, cwd: Path, env: dict[str, str], scripts: Path, log: _Log):
        self.shell, self.cwd, self.env, self.scripts, self.log = shell, cwd, env, scripts, log
        self.count = 0
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        driver = self.scripts / "driver.sh"
        driver.write_text(_DRIVER)
        cmd_r, self.cmd_w = os.pipe()
        self.status_r, status_w = os.pipe()
        exe = shutil.which(self.shell, path=self.env.get("PATH")) or self.shell
        # the driver starts with the command pipe on stdin and the status pipe on stderr (fds a POSIX sh
        # can name), moves them to 8 and 9 and gives the commands /dev/null and the output pipe instead
        self.proc = subprocess.Popen(
            [exe, str(driver)],
            cwd=self.cwd,
            env=self.env,
            stdin=cmd_r,
            stdout=subprocess.PIPE,
            stderr=status_w,
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(status_w)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.pending = b""

    def run(self, command: str, succeeding: bool) -> int:
        if self.proc is None:
            self._start()
        self.count += 1
        script = self.scripts / f"command-{self.count:04d}.sh"
        script.write_text(
            f"CODEBUILD_BUILD_SUCCEEDING={int(succeeding)}; export CODEBUILD_BUILD_SUCCEEDING\n{command}\n"
        )
        os.write(self.cmd_w, f"{script}\n".encode())
        out_fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(out_fd, selectors.EVENT_READ)
        sel.register(self.status_r, selectors.EVENT_READ)
        status = b""
        try:
            while True:
                for key, _ in sel.select():
                    if key.fd == out_fd:
                        self._read_output()
                        continue
                    chunk = os.read(self.status_r, 64)
                    if not chunk:  # the shell itself ended (the command ran `exit`)
                        return self._ended()
                    status += chunk
                    if status.endswith(b"\n"):
                        self._read_output()  # what the command wrote before its status came
                        self._flush_partial()
                        return int(status.strip().splitlines()[-1])
        finally:
            sel.close()

    def _read_output(self) -> None:
        while True:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.pending += chunk
            *lines, self.pending = self.pending.split(b"\n")
            for raw in lines:
                self.log.line(raw.decode("utf-8", "replace").rstrip("\r"))

    def _flush_partial(self) -> None:
        if self.pending:
            self.log.line(self.pending.decode("utf-8", "replace"))
            self.pending = b""

    def _ended(self) -> int:
        os.set_blocking(self.proc.stdout.fileno(), True)
        rest = self.proc.stdout.read() or b""
        self.pending += rest
        for raw in (
            self.pending.split(b"\n")[:-1] if self.pending.endswith(b"\n") else self.pending.split(b"\n")
        ):
            self.log.line(raw.decode("utf-8", "replace"))
        self.pending = b""
        code = self.proc.wait()
        self.close()
        self.log.agent("The build's shell exited; later commands run in a new shell without its state")
        return code if code else 1

    def close(self) -> None:
        if self.proc is None:
            return
        for fd in (self.cmd_w, self.status_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc = None


def run_build(
    source: Source,
    work_dir: Path,
    *,
    environ: Mapping[str, str],
    overrides: Mapping[str, str] | None = None,
    buildspec: Path | None = None,
    project_name: str = "",
    build_number: int = 1,
    initiator: str = "",
    artifacts_dir: Path | None = None,
    zip_artifacts: bool = False,
    echo: Callable[[str], None] | None = None,
) -> BuildResult:
    """Clone ``source`` into ``work_dir/src`` and run its buildspec (``buildspec`` overrides the file: a path
    relative to the source, or an absolute one). A bad buildspec raises :class:`BuildspecError` before any
    command runs; a failed build returns a result with ``status`` FAILED and ``reason``."""
    started = time.monotonic()
    work_dir = Path(work_dir).resolve()
    src = work_dir / "src"
    if src.exists():
        raise BuildspecError(
            f"{src}: already exists; give a fresh --work-dir (each build clones the source anew)"
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    project_name = project_name or _repo_name(source.repo)
    build_uuid = str(uuid.uuid4())
    build_id = f"{project_name}:{build_uuid}"
    log = _Log(work_dir / "build.log", echo)
    phases: list[PhaseResult] = []
    try:
        log.agent(f"Build {build_id} (local CodeBuild, build number {build_number})")
        log.agent("Entering phase DOWNLOAD_SOURCE")
        commit, previous = _clone(source, src)
        log.agent(f"Cloned {source.repo} branch {source.branch} at {commit} (committed files only)")
        log.agent("Phase complete: DOWNLOAD_SOURCE State: SUCCEEDED")
        spec_path = (
            buildspec if buildspec and Path(buildspec).is_absolute() else src / (buildspec or "buildspec.yml")
        )
        spec = load_buildspec(spec_path)

        env = container_environment(environ)
        env.update(spec.variables)
        env.update(
            _codebuild_variables(
                build_id=build_id,
                build_uuid=build_uuid,
                build_number=build_number,
                source=source,
                src=src,
                commit=commit,
                previous=previous,
                initiator=initiator or f"mlops-local/{_user()}",
                environ=environ,
            )
        )
        env.update(overrides or {})
        log.agent("Processing environment variables")
        for section in spec.ignored:
            log.agent(
                f"{section}: not resolved locally (no Parameter Store, Secrets Manager or exports here)"
            )
        if spec.cache_paths:
            log.agent(
                f"cache.paths ({', '.join(spec.cache_paths)}): accepted, not used (no cache between local builds)"
            )
        log.agent(f"Moving to directory {src}")
        scripts = work_dir / ".codebuild"
        scripts.mkdir(exist_ok=True)
        shell = _Shell(spec.shell, src, env, scripts, log)
        succeeding = True
        failure: PhaseResult | None = None
        reached_build = False
        stop = False
        try:
            for name in PHASES:
                phase = spec.phases.get(name)
                if stop:
                    phases.append(PhaseResult(name.upper(), "SKIPPED"))
                    continue
                if name == "build":
                    reached_build = True
                if phase is None:
                    continue
                result = _run_phase(phase, shell, log, env, succeeding)
                phases.append(result)
                if result.status == "FAILED":
                    succeeding = False
                    failure = failure or result
                    if phase.on_failure == "ABORT" and name in ("install", "pre_build"):
                        stop = True
        finally:
            shell.close()

        result = BuildResult(build_id, "SUCCEEDED", work_dir, src, log.path, phases)
        if reached_build:
            log.agent("Entering phase UPLOAD_ARTIFACTS")
            upload_ok = _upload(spec, src, work_dir, artifacts_dir, zip_artifacts, result, log)
            log.agent(f"Phase complete: UPLOAD_ARTIFACTS State: {'SUCCEEDED' if upload_ok else 'FAILED'}")
            if not upload_ok and failure is None:
                result.reason = "UPLOAD_ARTIFACTS: no matching artifact paths found"
                succeeding = False
        else:
            log.agent("Skipping UPLOAD_ARTIFACTS: the build did not reach the BUILD phase")
        if failure is not None:
            result.reason = (
                f"{failure.name}: command {_short(failure.failed_command)!r} exited {failure.exit_code}"
            )
        result.status = "SUCCEEDED" if succeeding else "FAILED"
        result.seconds = time.monotonic() - started
        log.agent("Entering phase FINALIZING")
        log.agent(
            f"Build {result.status} in {result.seconds:.0f}s"
            + (f": {result.reason}" if result.reason else "")
        )
        return result
    finally:
        log.close()


def _run_phase(phase: Phase, shell: _Shell, log: _Log, env: dict, succeeding: bool) -> PhaseResult:
    started = time.monotonic()
    upper = phase.name.upper()
    log.agent(f"Entering phase {upper}")
    if phase.runtime_versions:
        _runtime_versions(phase.runtime_versions, log, env)
    result = PhaseResult(upper, "SUCCEEDED")
    for block in (phase.commands, phase.finally_):
        for command in block:
            log.agent(f"Running command {command.rstrip()}")
            code = shell.run(command, succeeding and result.status == "SUCCEEDED")
            if code != 0:
                log.agent(f"Command did not exit successfully {_short(command)} exit status {code}")
                if result.status == "SUCCEEDED":
                    result.status, result.failed_command, result.exit_code = "FAILED", command, code
                break  # the rest of this block is skipped; the finally block still runs
    result.seconds = time.monotonic() - started
    log.agent(f"Phase complete: {upper} State: {result.status}")
    if result.status == "FAILED":
        log.agent(
            "Phase context status code: COMMAND_EXECUTION_ERROR Message: Error while executing command: "
            f"{_short(result.failed_command)}. Reason: exit status {result.exit_code}"
        )
    else:
        log.agent("Phase context status code:  Message: ")
    return result


def _runtime_versions(runtimes: Mapping[str, str], log: _Log, env: dict) -> None:
    for runtime, version in runtimes.items():
        log.agent(f"Selecting '{runtime}' runtime version '{version}' based on manual selections...")
        if runtime != "python":
            log.agent(f"runtime {runtime} {version}: accepted; nothing is installed locally")
            continue
        python = shutil.which("python3", path=env.get("PATH"))
        found = ""
        if python:
            probe = subprocess.run(
                [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )
            found = probe.stdout.strip()
        if found and (found == version or found.startswith(version + ".")):
            log.agent(f"python {version}: the build environment's python3 ({python}) is {found}")
        else:
            log.agent(
                f"WARNING: runtime-versions asks for python {version} but the build environment's python3 "
                f"({python or 'not on PATH'}) is {found or 'unknown'}; nothing is installed locally"
            )


def _upload(spec, src, work_dir, artifacts_dir, zip_artifacts, result: BuildResult, log: _Log) -> bool:
    for group in spec.reports:
        summary = _report(group, src)
        result.reports.append(summary)
        if summary.problem:
            log.agent(f"Report group {group.name}: {summary.problem}")
        else:
            log.agent(
                f"Report group {group.name} ({group.file_format}, {len(summary.files)} file(s)): "
                f"{summary.total} test case(s), {summary.passed} passed, {summary.failed} failed, "
                f"{summary.skipped} skipped"
            )
    if spec.artifacts is None:
        return True
    art = spec.artifacts
    base = src / art.base_directory
    matched = _matches(base, art.files, art.exclude_paths)
    if not matched:
        log.agent(
            f"Phase context status code: CLIENT_ERROR Message: no matching artifact paths found ({base})"
        )
        return False
    dest_root = Path(artifacts_dir).resolve() if artifacts_dir else work_dir / "artifacts"
    dest = dest_root / (art.name or "artifacts")
    if dest.exists():
        shutil.rmtree(dest)
    for path in matched:
        rel = Path(path.name) if art.discard_paths else path.relative_to(base)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        result.artifacts.append(target)
    result.artifacts_dir = dest
    log.agent(f"Artifacts: {len(matched)} file(s) from {base} copied to {dest}")
    if zip_artifacts:
        result.zip_path = dest.with_suffix(".zip")
        with zipfile.ZipFile(result.zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            for target in result.artifacts:
                zf.write(target, target.relative_to(dest))
        log.agent(f"Artifacts zipped to {result.zip_path}")
    cache_note = " (cache.paths not uploaded)" if spec.cache_paths else ""
    log.agent(f"Upload of artifacts complete{cache_note}")
    return True


def _matches(base: Path, patterns, excludes=()) -> list[Path]:
    """Files under ``base`` that the buildspec's globs name (``**/*`` is every file below), in order."""
    if not base.is_dir():
        return []
    seen: dict[Path, None] = {}
    for pattern in patterns:
        for path in sorted(base.glob(pattern)):
            if path.is_file():
                seen.setdefault(path, None)
            elif path.is_dir() and not any(ch in pattern for ch in "*?["):
                for inner in sorted(path.rglob("*")):  # a directory named outright: all of it
                    if inner.is_file():
                        seen.setdefault(inner, None)
    return [
        p for p in seen if not any(fnmatch.fnmatch(p.relative_to(base).as_posix(), ex) for ex in excludes)
    ]


def _report(group: ReportGroup, src: Path) -> ReportSummary:
    files = _matches(src / group.base_directory, group.files)
    summary = ReportSummary(group.name, [str(f) for f in files])
    if not files:
        summary.problem = (
            f"report files not found ({', '.join(group.files)} in {group.base_directory or '.'})"
        )
        return summary
    if group.file_format != "JUNITXML":
        summary.problem = (
            f"{len(files)} {group.file_format} file(s) found; only JUNITXML is summarised locally"
        )
        return summary
    for path in files:
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as exc:
            summary.problem = f"{path.name}: not a JUnit XML report ({exc})"
            return summary
        for case in root.iter("testcase"):
            summary.total += 1
            if case.find("failure") is not None or case.find("error") is not None:
                summary.failed += 1
            elif case.find("skipped") is not None:
                summary.skipped += 1
            else:
                summary.passed += 1
    return summary


def _clone(source: Source, dest: Path) -> tuple[str, str]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            "git",
            "clone",
            "--quiet",
            "--branch",
            source.branch,
            "--single-branch",
            "--",
            source.repo,
            str(dest),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["git clone failed"])[-1]
        raise BuildFailed(f"DOWNLOAD_SOURCE: cannot clone {source.repo} branch {source.branch}: {detail}")

    def rev(spec: str) -> str:
        out = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", spec], cwd=dest, capture_output=True, text=True
        )
        return out.stdout.strip()

    return rev("HEAD"), rev("HEAD^")


def _codebuild_variables(
    *, build_id, build_uuid, build_number, source: Source, src: Path, commit, previous, initiator, environ
) -> dict[str, str]:
    """The variables CodeBuild sets in every build, for a webhook PUSH of ``source.branch``."""
    variables = {
        "CODEBUILD_BUILD_ID": build_id,
        "CODEBUILD_BUILD_NUMBER": str(build_number),
        "CODEBUILD_BUILD_IMAGE": "mlops-local",
        "CODEBUILD_BUILD_SUCCEEDING": "1",
        "CODEBUILD_INITIATOR": initiator,
        "CODEBUILD_LOG_PATH": build_uuid,
        "CODEBUILD_RESOLVED_SOURCE_VERSION": commit,
        "CODEBUILD_SOURCE_REPO_URL": source.repo,
        "CODEBUILD_SOURCE_VERSION": commit,  # a webhook build's source version is the pushed commit
        "CODEBUILD_SRC_DIR": str(src),
        "CODEBUILD_START_TIME": str(int(time.time() * 1000)),
        "CODEBUILD_WEBHOOK_ACTOR_ACCOUNT_ID": _user(),
        "CODEBUILD_WEBHOOK_EVENT": "PUSH",
        "CODEBUILD_WEBHOOK_HEAD_REF": f"refs/heads/{source.branch}",
        "CODEBUILD_WEBHOOK_TRIGGER": f"branch/{source.branch}",
    }
    if previous:
        variables["CODEBUILD_WEBHOOK_PREV_COMMIT"] = previous
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:  # CodeBuild sets both to the build's region
        variables["AWS_REGION"] = variables["AWS_DEFAULT_REGION"] = region
    return variables


def _repo_name(repo: str) -> str:
    name = repo.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return name.removesuffix(".git") or "build"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _short(command: str | None) -> str:
    first = (command or "").strip().splitlines()[0] if command and command.strip() else ""
    return first + (" ..." if command and len(command.strip().splitlines()) > 1 else "")


__all__ = [
    "PHASES",
    "Artifacts",
    "BuildFailed",
    "BuildResult",
    "Buildspec",
    "BuildspecError",
    "Phase",
    "PhaseResult",
    "ReportGroup",
    "ReportSummary",
    "Source",
    "container_environment",
    "load_buildspec",
    "parse_buildspec",
    "parse_overrides",
    "run_build",
]
