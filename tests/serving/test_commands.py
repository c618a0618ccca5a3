"""``mlops endpoints ...`` through argparse and the real handlers, against real endpoint processes."""

from __future__ import annotations

import json

import pytest

from mlops.cli.main import main
from mlops.serving import supervisor


def run_cli(*argv: str) -> int:
    return main(list(argv))


def test_endpoint_commands_end_to_end(home, sum_model, tmp_path, capsys):
    port = supervisor.free_port()
    assert run_cli("endpoints", "list", "--home", str(home)) == 0
    assert "no local endpoints" in capsys.readouterr().out

    code = run_cli("endpoints", "start", "cli", "--model-dir", str(sum_model), "--port", str(port),
                   "--workers", "1", "--version", "7", "--home", str(home))  # fmt: skip
    assert code == 0 and f"InService at http://127.0.0.1:{port}" in capsys.readouterr().out

    assert run_cli("endpoints", "list", "--home", str(home)) == 0
    table = capsys.readouterr().out
    assert "cli" in table and "InService" in table and f"127.0.0.1:{port}" in table

    assert run_cli("endpoints", "list", "--format", "json", "--home", str(home)) == 0
    [doc] = json.loads(capsys.readouterr().out)
    assert (doc["name"], doc["status"], doc["port"], doc["active"]["version"]) == (
        "cli",
        "InService",
        port,
        "7",
    )

    assert run_cli("endpoints", "show", "cli", "--format", "json", "--home", str(home)) == 0
    assert json.loads(capsys.readouterr().out)["deployments"][0]["status"] == "Succeeded"

    payload = tmp_path / "rows.csv"
    payload.write_text("1,2,3\n10,20,30\n")
    assert run_cli("endpoints", "invoke", "cli", "--data", str(payload), "--content-type", "text/csv",
                   "--accept", "text/csv", "--home", str(home)) == 0  # fmt: skip
    assert capsys.readouterr().out == "6.0\n60.0\n"

    payload.write_text("[1, 2")
    assert run_cli("endpoints", "invoke", "cli", "--data", str(payload), "--home", str(home)) == 1
    assert "HTTP 400" in capsys.readouterr().err

    assert run_cli("endpoints", "logs", "cli", "-n", "5", "--home", str(home)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 0 < len(lines) <= 5 and any("loaded model" in line for line in lines)

    assert run_cli("endpoints", "stop", "cli", "--home", str(home)) == 0
    assert "cli stopped" in capsys.readouterr().out
    assert supervisor.get_endpoint("cli", home=home).status == "Stopped"


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["endpoints", "stop", "ghost"], 2, "endpoint 'ghost': not found"),
        (["endpoints", "logs", "ghost"], 2, "endpoint 'ghost': not found"),
        (
            ["endpoints", "invoke", "ghost", "--data", "/nonexistent/payload.json"],
            1,
            "--data /nonexistent/payload.json",
        ),
        (["endpoints", "show", "bad name"], 1, "use 1-63 letters"),
        (["endpoints", "start", "x", "--model-dir", "/nonexistent", "--port", "8080"], 1, "is missing"),
    ],
    ids=["stop-unknown", "logs-unknown", "missing-data-file", "bad-name", "no-model"],
)
def test_bad_input_gives_one_red_line_and_an_exit_code(home, capsys, argv, code, message):
    assert run_cli(*argv, "--home", str(home)) == code
    err = capsys.readouterr().err
    assert message in err and err.startswith("error:") and len(err.strip().splitlines()) == 1
