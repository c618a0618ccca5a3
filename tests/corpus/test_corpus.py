"""The definitions SageMaker users actually have (README.md here: origins, how each was serialized), run with
``mlops run --definition`` as a new user would: each ends as ``expected.json`` says.

- ``"Succeeded"``: the whole pipeline runs here (its images through their stand-ins, boto3 inside jobs);
- ``{"refused": TYPE}``: it uses a step type another issue covers; ``--check`` names every blocker, and the
  run stops before its first step with one line naming a step of that type;
- ``{"blocked": FRAGMENT}``: the same for another blocker (e.g. a built-in algorithm other than XGBoost);
- ``{"fails": FRAGMENT, "why": ...}``: known not to run on this machine yet, for the reason given; the run
  must fail with that cause named (and which environment stood in), never with a traceback.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mlops.cli.main import main
from mlops.local.state.home import Home
from tests.local.conftest import bwrap_mode  # noqa: F401  (a fixture)

CORPUS = Path(__file__).resolve().parent
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
# The image table its user writes after the first run's failure hint (``mlops run --images``).
IMAGES = "images.yaml"
# The Lambda handlers its user maps after ``--check`` names the unmapped function (``--lambda-functions``).
LAMBDAS = "lambda_functions.yaml"
# The parameters its user starts it with (a first run of the Clarify/Model Monitor checks registers their
# baselines and skips the check, as the example's notebook does), given as ``--param K=V``.
PARAMS = "parameters.json"


def user_files(name: str) -> list[str]:
    """The options for the files a user wrote for this pipeline (an image table, Lambda handlers) and the
    parameters the user starts it with."""
    out = []
    for option, file in (("--images", IMAGES), ("--lambda-functions", LAMBDAS)):
        if (CORPUS / name / file).exists():
            out += [option, str(CORPUS / name / file)]
    if (CORPUS / name / PARAMS).exists():
        params = json.loads((CORPUS / name / PARAMS).read_text())
        out += [f"--param={key}={value}" for key, value in params.items()]
    return out


def blocker(expected: dict) -> str:
    return f"type {expected['refused']} is not supported" if "refused" in expected else expected["blocked"]


def seeded_home(tmp_path: Path, name: str) -> Path:
    home = tmp_path / "home"
    shutil.copytree(CORPUS / name / "s3", home / "s3")
    return home


def test_every_entry_has_a_definition_an_origin_and_an_expectation():
    entries = sorted(p.parent.name for p in CORPUS.glob("*/definition.json"))
    assert entries == sorted(EXPECTED) and len(entries) >= 10
    for name in entries:
        origin = (CORPUS / name / "ORIGIN.md").read_text()
        assert re.search(r"\b[0-9a-f]{40}\b", origin) and re.search(r"\baws(-samples)?/[\w.-]+", origin), name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e == "Succeeded"))
def test_a_public_pipeline_runs_to_succeeded(name, tmp_path, capsys, bwrap_mode):
    home = seeded_home(tmp_path, name)
    command = ["run", "--definition", str(CORPUS / name / "definition.json"), "--home", str(home)]
    code = main(command + user_files(name))
    out = capsys.readouterr()
    assert code == 0, out.out[-3000:] + out.err[-2000:]
    [record] = Home.open(home).runs.list()
    assert record["status"] == "Succeeded"


@pytest.mark.parametrize(
    "name", sorted(n for n, e in EXPECTED.items() if isinstance(e, dict) and {"refused", "blocked"} & set(e))
)
def test_a_pipeline_with_a_blocker_stops_before_start(name, tmp_path, capsys):
    words = blocker(EXPECTED[name])
    definition = CORPUS / name / "definition.json"
    code = main(["run", "--check", str(definition), "--json", *user_files(name)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and not doc["runnable"]
    assert any(words in b for b in doc["blockers"]), doc["blockers"]
    home = seeded_home(tmp_path, name)
    code = main(["run", "--definition", str(definition), "--home", str(home), *user_files(name)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and words in err, err
    assert Home.open(home).runs.list() == []  # nothing started, nothing recorded


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if isinstance(e, dict) and "fails" in e))
def test_a_known_gap_fails_naming_its_cause(name, tmp_path, capsys, bwrap_mode):
    home = seeded_home(tmp_path, name)
    command = ["run", "--definition", str(CORPUS / name / "definition.json"), "--home", str(home)]
    code = main(command + user_files(name))
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.out + out.err
    [record] = Home.open(home).runs.list()
    assert record["status"] == "Failed" and EXPECTED[name]["fails"] in record["failure_reason"], record


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.parent.name for p in CORPUS.glob(f"*/{IMAGES}")))
def test_without_its_image_table_the_failure_names_the_stand_in(name, tmp_path, capsys, bwrap_mode):
    """What leads its user to the table: the import error, which environment stood in, how to map it."""
    home = seeded_home(tmp_path, name)
    code = main(["run", "--definition", str(CORPUS / name / "definition.json"), "--home", str(home)])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.out + out.err
    [record] = Home.open(home).runs.list()
    reason = record["failure_reason"]
    assert record["status"] == "Failed" and "No module named 'torchvision'" in reason, reason
    assert "stood in for it" in reason and "local.images" in reason, reason
