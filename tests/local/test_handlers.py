"""A new step type is one handler: registered by type name, it runs under the same scheduler."""

from __future__ import annotations

import pytest

from mlops.errors import DefinitionError
from mlops.local import handlers
from mlops.local.records import Outcome
from mlops.local.scheduler import run_definition


class Greeter:
    """A toy step type: resolves its Arguments and returns Describe-shaped properties."""

    def __init__(self):
        self.seen: list[str] = []

    def run(self, step, execution):
        from mlops.definition.expressions import resolve

        args = resolve(step.arguments, execution.context())
        self.seen.append(step.name)
        return Outcome.succeeded({"Greeting": f"hello {args['Who']}", "Length": len(args["Who"])})


DEFINITION = {
    "Version": "2020-12-01",
    "Parameters": [{"Name": "Who", "Type": "String", "DefaultValue": "world"}],
    "Steps": [
        {"Name": "Greet", "Type": "Greeting", "Arguments": {"Who": {"Get": "Parameters.Who"}}},
        {
            "Name": "Check",
            "Type": "Condition",
            "Arguments": {
                "Conditions": [
                    {"Type": "GreaterThan", "LeftValue": {"Get": "Steps.Greet.Length"}, "RightValue": 3}
                ],
                "IfSteps": [],
                "ElseSteps": [
                    {
                        "Name": "TooShort",
                        "Type": "Fail",
                        "Arguments": {"ErrorMessage": {"Get": "Steps.Greet.Greeting"}},
                    }
                ],
            },
        },
    ],
}


@pytest.fixture
def greeter():
    handler = Greeter()
    handlers.register("Greeting", handler)
    yield handler
    handlers.unregister("Greeting")


def test_a_registered_toy_handler_runs_and_its_properties_feed_later_steps(tmp_path, greeter):
    record = run_definition(DEFINITION, home=tmp_path)
    assert record.status == "Succeeded", record.failure_reason
    assert greeter.seen == ["Greet"]
    assert record.steps["Greet"].properties == {"Greeting": "hello world", "Length": 5}
    assert record.steps["TooShort"].status == "NotExecuted"

    failed = run_definition(DEFINITION, home=tmp_path, params={"Who": "me"})
    assert failed.status == "Failed"
    assert failed.failure_reason == "hello me"  # the Fail step's message, read from the toy step's properties


def test_without_its_handler_the_type_is_refused_before_start(tmp_path):
    with pytest.raises(DefinitionError, match="step Greet: type Greeting is not supported"):
        run_definition(DEFINITION, home=tmp_path)
    assert "Greeting" not in handlers.supported()
