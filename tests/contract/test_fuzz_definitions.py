"""A definition-mutation fuzzer: validate, parse and the local planner accept a mutant or refuse it with a
one-line DefinitionError/ParameterError, never another exception. Mutants are never run (no jobs).

Seeds: the compiled definitions of the project (local) and small hand-written ones. Mutations: drop,
retype and replace keys, wrong types, huge strings, deep nesting, dangling references. Fixed seed and
count, so a failure reproduces; the counts by outcome are printed (``pytest -s``) and both must occur.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter

import pytest

from mlops.definition.model import parse
from mlops.definition.validate import validate_definition
from mlops.errors import DefinitionError, ParameterError
from mlops.local.scheduler import plan
from tests.contract.test_definition_model import condition, definition, step

SEED = 20240601
MUTANTS = 300
REFUSALS = (DefinitionError, ParameterError)

HAND_WRITTEN = [
    definition(step("Prep"), condition("Check", [step("Good", reads=["Prep"])], [step("Bad")], left="Prep")),
    {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5}],
        "Steps": [
            step("Train", CacheConfig={"Enabled": True, "ExpireAfter": "P30D"}),
            {
                "Name": "Gate",
                "Type": "Condition",
                "Arguments": {
                    "Conditions": [
                        {
                            "Type": "Or",
                            "Conditions": [
                                {
                                    "Type": "GreaterThan",
                                    "LeftValue": {"Get": "Parameters.Threshold"},
                                    "RightValue": 1,
                                },
                                {
                                    "Type": "Not",
                                    "Condition": {"Type": "In", "QueryValue": 1, "Values": [1, 2]},
                                },
                            ],
                        }
                    ],
                    "IfSteps": [{"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "stop"}}],
                    "ElseSteps": [],
                },
                "DependsOn": ["Train"],
            },
        ],
    },
]


def _paths(doc):
    """Every (container, key) inside ``doc``."""
    out, stack = [], [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            out.append((node, key))
            stack.append(value)
    return out


def _deep(levels: int):
    value: object = "x"
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


WRONG = [
    None,
    0,
    -1,
    1.5,
    True,
    "",
    "x",
    [],
    {},
    [1, "a"],
    {"Get": 7},
    {"Std:Join": 5},
    {"Get": "Steps.Nowhere.X"},
]


def mutate(doc: dict, rng: random.Random) -> dict:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(doc)
        if not paths:
            break
        parent, key = rng.choice(paths)
        kind = rng.randrange(8)
        if kind == 0 and isinstance(parent, dict):  # drop a key
            parent.pop(key, None)
        elif kind == 1 and isinstance(parent, dict):  # rename a key
            parent[key + "X" if rng.random() < 0.5 else key.lower()] = parent.pop(key)
        elif kind == 2:  # a wrong type
            parent[key] = copy.deepcopy(rng.choice(WRONG))
        elif kind == 3:  # retype: wrap or unwrap
            value = parent[key]
            parent[key] = [value] if rng.random() < 0.5 else {"v": value}
        elif kind == 4:  # a huge string
            parent[key] = "y" * rng.choice([300, 600, 70_000, 3_000_000])
        elif kind == 5:  # deep nesting, the last mutation (copying it would recurse)
            parent[key] = _deep(rng.choice([50, 150, 2_000, 100_000]))
            break
        elif kind == 6:  # a dangling reference
            parent[key] = rng.choice(
                [
                    {"Get": "Steps.Ghost.ProcessingJobArn"},
                    {"Get": "Parameters.Ghost"},
                    {"Get": "Execution.Ghost"},
                ]
            )
            if isinstance(doc.get("Steps"), list) and doc["Steps"] and isinstance(doc["Steps"][0], dict):
                doc["Steps"][0]["DependsOn"] = (
                    ["Ghost"] if rng.random() < 0.3 else doc["Steps"][0].get("DependsOn", [])
                )
        else:  # swap in a value from elsewhere in the document
            donor, donor_key = rng.choice(paths)
            parent[key] = copy.deepcopy(donor[donor_key])
    return doc


def _one_line(err: BaseException) -> bool:
    text = str(err)
    return bool(text) and "\n" not in text and len(text) < 2000


@pytest.fixture(scope="module")
def seeds(compiled_local):
    return [compiled_local.definition(k) for k in sorted(compiled_local.definitions)] + HAND_WRITTEN


def test_mutants_are_accepted_or_refused_with_one_line(seeds):
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    bad: list[str] = []
    for index in range(MUTANTS):
        mutant = mutate(rng.choice(seeds), rng)
        for name, check in (("validate", validate_definition), ("parse", parse), ("plan", plan)):
            try:
                result = check(mutant)
            except REFUSALS as err:
                outcomes[f"{name}: refused"] += 1
                if not _one_line(err):
                    bad.append(f"mutant {index} {name}: not one line: {str(err)[:200]!r}")
            except BaseException as err:  # noqa: BLE001 - the point is to catch everything else
                bad.append(f"mutant {index} {name}: {type(err).__name__}: {str(err)[:200]}")
            else:
                if name == "validate":
                    outcomes[f"validate: {'findings' if result else 'clean'}"] += 1
                    bad.extend(
                        f"mutant {index} validate: finding not one line: {str(f)[:200]!r}"
                        for f in result
                        if "\n" in str(f)
                    )
                else:
                    outcomes[f"{name}: accepted"] += 1
    print("\nfuzz outcomes:", json.dumps(dict(sorted(outcomes.items()))))
    assert bad == []
    for name in ("parse", "plan"):
        assert outcomes[f"{name}: accepted"] > 0 and outcomes[f"{name}: refused"] > 0, outcomes
    assert outcomes["validate: findings"] > 0 and outcomes["validate: clean"] > 0, outcomes
