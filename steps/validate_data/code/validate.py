"""Validate data (SageMaker Processing job): the data-quality gate, run with great-expectations 1.x.

Container contract: reads /opt/ml/processing/input/{train,validation,test}/*.csv and the suite YAML given
as ``--suite``; writes /opt/ml/processing/output/report/validation.json (the GX result per split) and GX
data docs under /opt/ml/processing/output/report/data_docs/. On failure it still writes the report, puts
a one-line summary in /opt/ml/output/message (SageMaker's failure reason) and on stderr, and exits 1.
A suite file that is itself invalid exits 2 with a one-line error naming the file and entry.

Suite format (see config/expectations/digits.yaml): ``expectations`` is a list of entries, each with
``type`` (a GX expectation in snake_case), ``kwargs`` and optionally ``column``, ``columns`` (globs
expanded against the suite's expect_table_columns_to_match_ordered_list), ``splits`` and ``meta``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

INPUT_DIR = Path("/opt/ml/processing/input")
REPORT_DIR = Path("/opt/ml/processing/output/report")
FAILURE_MESSAGE = Path("/opt/ml/output/message")
SPLITS = ("train", "validation", "test")
ENTRY_KEYS = {"type", "kwargs", "column", "columns", "splits", "meta"}
SCHEMA_TYPES = ("expect_table_columns_to_match_ordered_list", "expect_table_columns_to_match_set")
MAX_LISTED_FAILURES = 5


class SuiteError(Exception):
    """The suite YAML is invalid; ``str()`` is one line naming the file and the entry."""


@dataclass
class Entry:
    index: int
    type: str
    kwargs: dict[str, Any]
    splits: list[str] | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    path: Path
    entries: list[Entry]

    def expectations_for(self, split: str) -> list:
        """GX expectation objects for one split (built fresh: GX binds them to one suite)."""
        return [_build(self.path, e) for e in self.entries if e.splits is None or split in e.splits]


def _class_name(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _build(path: Path, entry: Entry):
    import great_expectations.expectations as gxe
    from pydantic import ValidationError as ValidationErrorV2
    from pydantic.v1 import ValidationError as ValidationErrorV1  # what GX 1.x expectation models raise

    ValidationError = (ValidationErrorV1, ValidationErrorV2)

    cls = getattr(gxe, _class_name(entry.type), None)
    if cls is None or not entry.type.startswith("expect_"):
        raise SuiteError(f"{path}: entry {entry.index}: unknown expectation type {entry.type!r}")
    try:
        return cls(**entry.kwargs, meta=entry.meta or None)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "kwargs"
        column = f" (column {entry.kwargs['column']!r})" if "column" in entry.kwargs else ""
        raise SuiteError(
            f"{path}: entry {entry.index} ({entry.type}){column}: bad kwargs: {where}: {first['msg']}"
        ) from None
    except TypeError as err:
        raise SuiteError(f"{path}: entry {entry.index} ({entry.type}): bad kwargs: {err}") from None


def load_suite(path: str | os.PathLike) -> Suite:
    """Parse and check a suite YAML, expanding column globs; raises SuiteError with one line."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SuiteError(f"{path}: cannot read suite: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SuiteError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("expectations"), list) or not doc["expectations"]:
        raise SuiteError(f"{path}: expected a mapping with a non-empty 'expectations' list")
    unknown = set(doc) - {"name", "expectations"}
    if unknown:
        raise SuiteError(f"{path}: unknown top-level key(s) {sorted(unknown)} (allowed: name, expectations)")

    schema = next(
        (
            e.get("kwargs", {}).get("column_list")
            for e in doc["expectations"]
            if isinstance(e, dict) and e.get("type") in SCHEMA_TYPES and isinstance(e.get("kwargs"), dict)
        ),
        None,
    )
    entries: list[Entry] = []
    for index, raw in enumerate(doc["expectations"]):
        where = f"{path}: entry {index}"
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise SuiteError(f"{where}: expected a mapping with a 'type' (got {raw!r:.60})")
        if set(raw) - ENTRY_KEYS:
            raise SuiteError(
                f"{where}: unknown key(s) {sorted(set(raw) - ENTRY_KEYS)} (allowed: {sorted(ENTRY_KEYS)})"
            )
        kwargs = raw.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise SuiteError(f"{where} ({raw['type']}): 'kwargs' must be a mapping (got {kwargs!r:.60})")
        splits = raw.get("splits")
        if splits is not None and (
            not isinstance(splits, list) or not set(splits) <= set(SPLITS) or not splits
        ):
            raise SuiteError(
                f"{where} ({raw['type']}): 'splits' must be a non-empty list of {list(SPLITS)} (got {splits!r})"
            )
        meta = raw.get("meta") or {}
        if "column" in raw and "columns" in raw:
            raise SuiteError(f"{where} ({raw['type']}): give 'column' or 'columns', not both")
        columns: list[str | None] = [None]
        if "column" in raw:
            columns = [raw["column"]]
        elif "columns" in raw:
            patterns = raw["columns"] if isinstance(raw["columns"], list) else [raw["columns"]]
            if not all(isinstance(p, str) for p in patterns):
                raise SuiteError(f"{where} ({raw['type']}): 'columns' must be a glob or a list of globs")
            if schema is None:
                raise SuiteError(
                    f"{where} ({raw['type']}): 'columns' globs need an {SCHEMA_TYPES[0]} entry to expand against"
                )
            columns = [c for c in schema if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
            if not columns:
                raise SuiteError(
                    f"{where} ({raw['type']}): 'columns' {patterns} match no column of the suite's column_list"
                )
        for column in columns:
            entry_kwargs = dict(kwargs) if column is None else {**kwargs, "column": column}
            entry = Entry(index, raw["type"], entry_kwargs, splits, meta)
            _build(path, entry)  # fail now, on the entry, rather than mid-validation
            entries.append(entry)
    return Suite(str(doc.get("name") or path.stem), path, entries)


def read_split(split_dir: Path) -> pd.DataFrame | None:
    files = sorted(split_dir.glob("*.csv"))
    if not files:
        return None
    frames = [pd.read_csv(f) for f in files]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def read_splits(input_dir: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for split in SPLITS:
        started = time.monotonic()
        frame = read_split(input_dir / split)
        if frame is not None:
            frames[split] = frame
            print(f"read {split}: {len(frame)} rows ({time.monotonic() - started:.1f}s)", flush=True)
    return frames


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(_fmt, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # GX stores bounds as floats; 16 reads better than 16.0
    return str(value)


def describe_failure(split: str, result: Any) -> str:
    """One short clause for a failed expectation: where, what, and what was seen."""
    config = result.expectation_config
    kwargs = config.kwargs
    where = f"{split}.{kwargs['column']}" if kwargs.get("column") else split
    details = result.result or {}
    if result.exception_info and result.exception_info.get("raised_exception"):
        message = str(result.exception_info.get("exception_message") or "error").splitlines()[0][:120]
        return f"{where} {config.type} (error: {message})"
    count = details.get("unexpected_count")
    seen = details.get("partial_unexpected_list") or []
    rows = f"{count} row{'s' if count != 1 else ''}" if count is not None else ""
    if config.type == "expect_column_values_to_not_be_null":
        what = f"{rows} null"
    elif "min_value" in kwargs or "max_value" in kwargs:
        bounds = f"[{_fmt(kwargs.get('min_value'))}, {_fmt(kwargs.get('max_value'))}]"
        if count is not None:
            what = f"{rows} out of {bounds}"
        else:
            what = f"observed {_fmt(details.get('observed_value'))}, expected {bounds}"
    elif count is not None:
        sample = sorted({str(v) for v in seen})[:5]
        what = f"{count} unexpected: {', '.join(sample)}"
    elif config.type in SCHEMA_TYPES:
        expected = kwargs.get("column_list") or []
        observed = details.get("observed_value") or []
        missing = [c for c in expected if c not in observed]
        extra = [c for c in observed if c not in expected]
        parts = [f"missing {_fmt(missing[:5])}"] if missing else []
        parts += [f"unexpected {_fmt(extra[:5])}"] if extra else []
        what = "; ".join(parts) or "columns out of order"
    else:
        what = f"observed {_fmt(details.get('observed_value'))}"
    return f"{where} {config.type} ({what})"


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def fail(message: str, code: int) -> int:
    print(message, file=sys.stderr, flush=True)
    try:
        write_text_atomic(FAILURE_MESSAGE, message + "\n")
    except OSError as err:
        print(f"could not write {FAILURE_MESSAGE}: {err}", file=sys.stderr)
    return code


def validate(suite: Suite, frames: dict[str, pd.DataFrame], report_dir: Path) -> tuple[bool, str, dict]:
    """Run the suite on each split with GX, build data docs; returns (success, summary line, report)."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    docs_dir = report_dir / "data_docs"
    context.add_data_docs_site(
        "report",
        {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    for name in list(context.get_config().data_docs_sites or {}):
        if name != "report":
            context.delete_data_docs_site(name)
    source = context.data_sources.add_pandas("splits")

    report: dict[str, Any] = {"suite": suite.name, "splits": {}}
    failures: list[str] = []
    evaluated = 0
    for split, frame in frames.items():
        started = time.monotonic()
        expectations = suite.expectations_for(split)
        print(
            f"validating {split}: {len(frame)} rows against {len(expectations)} expectations ...", flush=True
        )
        gx_suite = context.suites.add(
            gx.ExpectationSuite(name=f"{suite.name}.{split}", expectations=expectations)
        )
        batch = source.add_dataframe_asset(split).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=split, data=batch, suite=gx_suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame}, result_format="BASIC")
        report["splits"][split] = result.to_json_dict()
        evaluated += result.statistics["evaluated_expectations"]
        failed = [r for r in result.results if not r.success]
        failures += [describe_failure(split, r) for r in failed]
        print(
            f"validated {split}: {len(failed)} of {len(expectations)} expectations failed "
            f"({time.monotonic() - started:.1f}s)",
            flush=True,
        )

    started = time.monotonic()
    context.build_data_docs(site_names=["report"])
    print(f"built data docs in {docs_dir} ({time.monotonic() - started:.1f}s)", flush=True)

    success = not failures
    if success:
        summary = f"data quality passed: {evaluated} expectations on {', '.join(frames)}"
    else:
        listed = "; ".join(failures[:MAX_LISTED_FAILURES])
        more = (
            f"; and {len(failures) - MAX_LISTED_FAILURES} more" if len(failures) > MAX_LISTED_FAILURES else ""
        )
        summary = f"data quality failed: {len(failures)} of {evaluated} expectations: {listed}{more}"
    report["success"] = success
    report["summary"] = summary
    return success, summary, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, help="path of the suite YAML")
    parser.add_argument("--input-dir", type=Path, default=INPUT_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--report-dir", type=Path, default=REPORT_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    # Parse the CSVs while the suite check imports GX (seconds of import time): the C parser spends most
    # of its time outside the GIL, so on a 2-core job this hides most of the read.
    with ThreadPoolExecutor(max_workers=1) as pool:
        reading = pool.submit(read_splits, args.input_dir)
        try:
            suite = load_suite(args.suite)
        except SuiteError as err:
            reading.cancel()
            return fail(f"invalid data-quality suite: {err}", 2)
        # Some GX modules pin their own logger to INFO on import; keep the job log to our progress lines.
        for name in ("great_expectations", "great_expectations.data_context.types.base"):
            logging.getLogger(name).setLevel(logging.WARNING)
        print(
            f"suite {suite.name}: {len(suite.entries)} expectations (all splits) from {args.suite}",
            flush=True,
        )
        frames = reading.result()
    if not frames:
        return fail(f"data quality failed: no CSV files under {args.input_dir}/{{{','.join(SPLITS)}}}", 1)

    success, summary, report = validate(suite, frames, args.report_dir)
    write_text_atomic(args.report_dir / "validation.json", json.dumps(report, indent=1, default=str))
    print(f"wrote {args.report_dir / 'validation.json'}", flush=True)
    if not success:
        return fail(summary, 1)
    print(summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
