#!/usr/bin/env python
"""Regenerate the corpus: for each entry, tests/corpus/<name>/definition.json and tests/corpus/<name>/s3/.

    .venv/bin/python scripts/corpus/build.py                 # every entry
    .venv/bin/python scripts/corpus/build.py NAME [NAME...]  # some
    .venv/bin/python scripts/corpus/build.py --out DIR       # write DIR/<name>/... instead (to diff)

Run it with the project's .venv (it has moto and torch); each entry's own script runs under the SDK its
example was written for: ``.venv-sdkv2`` (``pip install 'sagemaker>=2.200,<3'``) or ``.venv``.

For each entry:
  1. a fixed work directory /tmp/corpus-work/<name> gets tests/corpus/<name>/source/ (the example's files,
     as the example ships them) and the generated stand-ins for the data the example downloads;
     every file's mtime is set to a constant, so archives the SDK builds are the same every time;
  2. a local moto server (127.0.0.1, account 111122223333) is reset, the default bucket is created and
     the objects the example expects to find in public buckets are put there;
  3. scripts/corpus/entries/<name>.py builds the pipeline as the example does and writes
     ``pipeline.definition()``: every upload the SDK makes while doing so lands in moto;
  4. every object in moto is copied to tests/corpus/<name>/s3/<bucket>/<key>; gzip headers and tar
     members lose their timestamps and owners (content unchanged), so the tree is deterministic.

Nothing reaches AWS: the entry processes see only AWS_ENDPOINT_URL=http://127.0.0.1:PORT, dummy
credentials and no shared config files.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = ROOT / "tests" / "corpus"
WORK = Path("/tmp/corpus-work")
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import data  # noqa: E402

PYTHON = {"v2": ROOT / ".venv-sdkv2" / "bin" / "python", "v3": ROOT / ".venv" / "bin" / "python"}
FIXED_MTIME = 1704067200  # 2024-01-01T00:00:00Z

SDK_CONFIG = """\
SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


@dataclass(frozen=True)
class Entry:
    sdk: str  # "v2" (.venv-sdkv2) or "v3" (.venv)
    local: dict[str, str] = field(default_factory=dict)  # work-dir path -> data generator
    seed: dict[str, str] = field(default_factory=dict)  # s3://bucket/key -> data generator


TAXI = {
    f"s3://{common.BUCKET}/taxi/yellow_tripdata_2020-{m:02d}.csv": f"taxi_2020_{m:02d}" for m in range(1, 13)
}

ENTRIES: dict[str, Entry] = {
    "examples-abalone-batch-transform": Entry(
        "v2", local={"data/abalone-dataset.csv": "abalone", "data/abalone-dataset-batch": "abalone_batch"}
    ),
    "projects-modelbuild-abalone": Entry(
        "v2", seed={"s3://sagemaker-servicecatalog-seedcode-us-east-1/dataset/abalone-dataset.csv": "abalone"}
    ),
    "sdkv2-integ-pytorch-conditional-register": Entry("v2", local={"training": "mnist_legacy"}),
    "examples-tensorflow-pipelinemodel-register": Entry(
        "v2", local={"data/raw/raw_data_all.csv": "cal_housing"}
    ),
    "examples-sklearn-classic-training-step-decorator": Entry("v2"),
    "examples-tuning-step": Entry(
        "v2",
        seed={
            "s3://sagemaker-example-files-prod-us-east-1/datasets/tabular/uci_abalone/abalone.csv": "abalone"
        },
    ),
    "examples-lambda-step": Entry(
        "v2", seed={"s3://sagemaker-sample-files/datasets/tabular/uci_abalone/abalone.csv": "abalone"}
    ),
    "examples-clarify-quality-checks": Entry(
        "v2",
        seed={
            "s3://sagemaker-example-files-prod-us-east-1/datasets/tabular/uci_abalone/abalone.csv": "abalone"
        },
    ),
    "examples-callback-step": Entry("v2", seed=TAXI),
    "examples-emr-step": Entry(
        "v2",
        seed={
            "s3://sagemaker-example-files-prod-us-east-1/datasets/tabular/uci_abalone/abalone.csv": "abalone"
        },
    ),
    "sdkv3-integ-train-registry": Entry("v3", local={"data/pipeline/abalone.csv": "abalone"}),
    "sdkv3-example-tuning-pytorch": Entry("v3", local={"data": "mnist_raw"}),
}


# --- moto ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Moto:
    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MOTO_ACCOUNT_ID": common.ACCOUNT, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
        self.log = tempfile.NamedTemporaryFile(prefix="corpus-moto-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [str(PYTHON["v3"]), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        self.stop(keep_log=True)
        raise SystemExit(f"moto did not start on {self.url} (log: {self.log.name})")

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=30
        )

    def stop(self, keep_log: bool = False) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if not keep_log:
            os.unlink(self.log.name)

    def s3(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, region_name=common.REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip


def aws_env(moto: Moto, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_", "MOTO_"))}
    env.update(
        AWS_ENDPOINT_URL=moto.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=common.REGION,
        AWS_REGION=common.REGION,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        SAGEMAKER_VALIDATE_ROLE="false",
        SAGEMAKER_DISABLE_TELEMETRY="true",
        SAGEMAKER_SUPPRESS_V2_WARNING="1",
        PYTHONWARNINGS="ignore",
        HOME=str(home),
        TZ="UTC",
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
    )
    config = home / "sagemaker-config.yaml"
    config.write_text(SDK_CONFIG)
    env["SAGEMAKER_ADMIN_CONFIG_OVERRIDE"] = str(config)
    env["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(config)
    return env


# --- one entry ----------------------------------------------------------------------------------------


def _generate(generator: str, path: Path) -> None:
    data.GENERATORS[generator](path)


def _fix_mtimes(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


def _normalize_targz(blob: bytes) -> bytes:
    """Same members and content, in name order; no timestamps, owners or gzip header time."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in sorted(src.getmembers(), key=lambda m: m.name):
            fileobj = src.extractfile(member) if member.isfile() else None
            member.mtime, member.uid, member.gid, member.uname, member.gname = 0, 0, 0, "", ""
            member.pax_headers = {}
            dst.addfile(member, fileobj)
    return data.gzip_bytes(out.getvalue())


def _normalize(key: str, blob: bytes) -> bytes:
    if key.endswith((".tar.gz", ".tgz")):
        try:
            return _normalize_targz(blob)
        except (tarfile.TarError, OSError, EOFError):
            return blob
    if key.endswith(".gz"):
        try:
            return data.gzip_bytes(gzip.decompress(blob))
        except (OSError, EOFError):
            return blob
    return blob


def build(name: str, entry: Entry, moto: Moto, out: Path) -> None:
    print(f"== {name} (SDK {entry.sdk})", flush=True)
    source = CORPUS / name / "source"
    work = WORK / name
    if work.exists():
        shutil.rmtree(work)
    (work / "cwd").mkdir(parents=True)
    (work / "home").mkdir()
    cwd = work / "cwd"
    if source.is_dir():
        shutil.copytree(source, cwd, dirs_exist_ok=True)
    for relative, generator in entry.local.items():
        _generate(generator, cwd / relative)
    _fix_mtimes(cwd)

    moto.reset()
    s3 = moto.s3()
    s3.create_bucket(Bucket=common.BUCKET)
    for uri, generator in entry.seed.items():
        bucket, key = uri[len("s3://") :].split("/", 1)
        if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=bucket)
        path = work / "seed" / bucket / key
        _generate(generator, path)
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    definition = work / "definition.json"
    env = aws_env(moto, work / "home")
    env["CORPUS_DEFINITION"] = str(definition)
    # The entry script runs from a fixed place outside the work dir: the SDK records some source paths
    # (a @step function's file becomes its step's Description), and none should name this checkout.
    bin_dir = work / "bin"
    bin_dir.mkdir()
    script = bin_dir / f"{name.replace('-', '_')}.py"
    shutil.copyfile(HERE / "entries" / script.name, script)
    shutil.copyfile(HERE / "common.py", bin_dir / "common.py")
    env["PYTHONPATH"] = os.pathsep.join([str(bin_dir), str(cwd)])  # the work dir importable, as in a notebook
    proc = subprocess.run(
        [str(PYTHON[entry.sdk]), str(script)], cwd=cwd, env=env, timeout=900, capture_output=True, text=True
    )
    (work / "entry.log").write_text(proc.stdout + proc.stderr)  # the SDK's chatter, kept out of the way
    if proc.returncode != 0 or not definition.is_file():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{name}: {script.name} failed (exit {proc.returncode}); log: {work / 'entry.log'}")

    target = out / name
    target.mkdir(parents=True, exist_ok=True)
    if (target / "s3").exists():
        shutil.rmtree(target / "s3")
    count, uris = 0, []
    for bucket in sorted(b["Name"] for b in s3.list_buckets()["Buckets"]):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                blob = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                path = target / "s3" / bucket / obj["Key"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_normalize(obj["Key"], blob))
                uris.append(f"s3://{bucket}/{obj['Key']}")
                count += 1
    shutil.copyfile(definition, target / "definition.json")
    text = definition.read_text()
    steps = [s["Type"] for s in json.loads(text)["Steps"]]
    print(f"   {len(steps)} top-level steps ({', '.join(steps)}), {count} S3 objects", flush=True)
    for uri in uris:
        if not _referenced(uri, text):
            print(f"   not named in the definition (uploaded by the SDK or the example anyway): {uri}")


def _referenced(uri: str, text: str) -> bool:
    """The definition names the object, or a prefix of it ending at a '/' (an S3Prefix input)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    parts = key.split("/")
    candidates = [f"s3://{bucket}/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ends = ('"', '\\"', '/"', '/\\"')  # a JSON string, or one JSON-encoded inside a hyperparameter
    return any(c + end in text for c in candidates for end in ends)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="entries to build (default: all)")
    parser.add_argument(
        "--out", type=Path, default=CORPUS, help="where <name>/ trees go (default tests/corpus)"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in ENTRIES]
    if unknown:
        parser.error(f"unknown entries: {', '.join(unknown)} (known: {', '.join(ENTRIES)})")
    for sdk in {ENTRIES[n].sdk for n in (args.names or ENTRIES)}:
        if not PYTHON[sdk].exists():
            parser.error(f"{PYTHON[sdk]} is missing (see tests/corpus/README.md)")
    moto = Moto()
    ok = False
    try:
        for name in args.names or ENTRIES:
            build(name, ENTRIES[name], moto, args.out)
        ok = True
    finally:
        moto.stop(keep_log=not ok)
        if not ok:
            print(f"moto's log: {moto.log.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
