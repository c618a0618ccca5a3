"""``DataProcessing``: InputFilter, JoinSource and OutputFilter applied record by record.

SageMaker lets a transform drop input fields before the model sees them (an ID column, say) and put
them back next to the prediction afterwards, so a report needs no post-processing join. That only
works record by record, which is why it is limited to line-delimited CSV and JSON (and whole-object
JSON), and why the model must return exactly one output record per input record.

Docs: https://docs.aws.amazon.com/sagemaker/latest/dg/batch-transform-data-processing.html and
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DataProcessing.html.

JSONPath is parsed by ``jsonpath-ng`` but evaluated here, over SageMaker's documented subset only
(``$``, ``.name``, ``*``, ``['a','b']``, ``[1,3]``, ``[-1]``, ``[2:5]``, and unions of indexes and
slices such as ``[0,5:]``): an expression that works here must also work on SageMaker, and SageMaker
fails a job whose indexes fall outside the record, where a general JSONPath library returns nothing.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Sequence
from typing import Any

from jsonpath_ng import parse as parse_jsonpath
from jsonpath_ng.jsonpath import Child, Fields, Index, Root, Slice, Wildcard

from mlops.local.transform import TransformError
from mlops.local.transform.records import split_records

CSV = "text/csv"
JSON_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines")
SAGEMAKER_OUTPUT = "SageMakerOutput"
SAGEMAKER_INPUT = "SageMakerInput"
JOIN_SOURCES = ("None", "Input")
IDENTITY = "$"
MAX_PATH_LENGTH = 63  # the API's length constraint on InputFilter and OutputFilter

_COMPACT = (",", ":")


def media_type(content_type: str | None) -> str | None:
    """``text/csv; charset=utf-8`` -> ``text/csv``: parameters do not change how records parse."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


class JsonPathFilter:
    """A compiled ``InputFilter`` or ``OutputFilter``; ``field`` is the API field it came from."""

    def __init__(self, expression: str | None, field: str) -> None:
        self.field = field
        self.expression = (expression or "").strip() or IDENTITY
        self._alternatives = _compile(self.expression, field)

    @property
    def identity(self) -> bool:
        return self.expression == IDENTITY

    def select(self, value: Any, where: str) -> Any:
        """The part of ``value`` the path selects, shaped as SageMaker (Jayway JsonPath) shapes it.

        A definite path (names and single indexes only) gives the value itself, names in brackets
        give an object of those names, anything else (slices, several indexes, wildcards, unions) a
        list. Selecting nothing, or an index or name the record lacks, is an error for the record.
        """
        if len(self._alternatives) > 1:
            walked = [self._walk(alt, value, where) for alt in self._alternatives]
            values, definite, names = [v for w in walked for v in w[0]], False, None
        else:
            values, definite, names = self._walk(self._alternatives[0], value, where)
        if not values and not definite:
            raise TransformError(f"{where}: {self.field} {self.expression!r} selects nothing from the record")
        if names is not None:
            return dict(zip(names, values, strict=True))
        return values[0] if definite else values

    def _walk(self, segments: tuple[Any, ...], value: Any, where: str) -> tuple[list[Any], bool, Any]:
        current, definite, names = [value], True, None
        for position, segment in enumerate(segments):
            if isinstance(segment, Fields) and len(segment.fields) > 1:
                # ['a','b'] on a single parent is an object of those names (the documented
                # "$['id','SageMakerOutput']" example); after a wildcard it is just more values.
                last = position == len(segments) - 1
                names = segment.fields if (definite and last) else None
            current = [v for item in current for v in self._step(segment, item, where)]
            definite = definite and _is_definite(segment)
        return current, definite, names

    def _step(self, segment: Any, value: Any, where: str) -> list[Any]:
        at = f"{where}: {self.field} {self.expression!r}"
        if isinstance(segment, Wildcard) or (isinstance(segment, Fields) and segment.fields == ("*",)):
            if isinstance(value, dict):
                return list(value.values())
            if isinstance(value, list):
                return list(value)
            raise TransformError(f"{at} uses '*' on {_kind(value)}")
        if isinstance(segment, Fields):
            if not isinstance(value, dict):
                raise TransformError(f"{at} selects field {segment.fields[0]!r} from {_kind(value)}")
            missing = [name for name in segment.fields if name not in value]
            if missing:
                raise TransformError(f"{at} selects field {missing[0]!r}, which the record does not have")
            return [value[name] for name in segment.fields]
        if isinstance(segment, Index):
            if not isinstance(value, list):
                raise TransformError(f"{at} selects an index from {_kind(value)}")
            outside = [i for i in segment.indices if not -len(value) <= i < len(value)]
            if outside:
                raise TransformError(
                    f"{at} selects index {outside[0]}, outside the record's {len(value)} elements"
                )
            return [value[i] for i in segment.indices]
        if not isinstance(value, list):  # Slice, the only other segment _compile lets through
            raise TransformError(f"{at} slices {_kind(value)}")
        return value[segment.start : segment.end]


class DataProcessing:
    """The ``DataProcessing`` of one job, checked against the content types and split it runs with.

    ``filter_input`` prepares each record for the model; ``assemble`` turns one response back into
    output records, joined with their inputs and filtered.
    """

    def __init__(
        self,
        input_filter: str | None = IDENTITY,
        output_filter: str | None = IDENTITY,
        join_source: str | None = "None",
        *,
        content_type: str | None = None,
        accept: str | None = None,
        split_type: str = "Line",
        assemble_with: str = "Line",
    ) -> None:
        self.join_source = join_source or "None"
        if self.join_source not in JOIN_SOURCES:
            raise TransformError(
                f"DataProcessing.JoinSource: {self.join_source!r} is not one of {', '.join(JOIN_SOURCES)}"
            )
        self.input_filter = JsonPathFilter(input_filter, "DataProcessing.InputFilter")
        self.output_filter = JsonPathFilter(output_filter, "DataProcessing.OutputFilter")
        self.input_media = media_type(content_type)
        # Without Accept the model answers in the request's type; that is what the output parses as.
        self.output_media = media_type(accept) or self.input_media
        self.split_type = split_type
        if self.active:
            self._check(content_type, accept, split_type, assemble_with)

    @property
    def transforms_input(self) -> bool:
        return not self.input_filter.identity

    @property
    def transforms_output(self) -> bool:
        return self.join_source == "Input" or not self.output_filter.identity

    @property
    def active(self) -> bool:
        return self.transforms_input or self.transforms_output

    def filter_input(self, record: bytes, where: str) -> bytes:
        """The part of ``record`` sent to the model, in the input's own content type."""
        if not self.transforms_input:
            return record
        selected = self.input_filter.select(_parse(record, self.input_media, where), where)
        return _render(selected, self.input_media, where, "TransformInput.ContentType")

    def assemble(self, inputs: Sequence[bytes], response: bytes, *, where: str, first: int) -> list[bytes]:
        """The output records for one batch: ``inputs`` are its original (unfiltered) records,
        ``first`` the index of the first of them in the object ``where`` names."""
        # With SplitType None the whole object was one record, so the whole response is one output
        # (a pretty-printed JSON answer spans lines); otherwise outputs are line-delimited.
        outputs = (
            [response.rstrip(b"\r\n")] if self.split_type == "None" else list(split_records(response, "Line"))
        )
        if len(outputs) != len(inputs):
            raise TransformError(
                f"{where}: the model returned {len(outputs)} records for the {len(inputs)} records from record "
                f"index {first}; JoinSource and OutputFilter need one output record per input record"
            )
        rendered = []
        for offset, (source, output) in enumerate(zip(inputs, outputs, strict=True)):
            at = f"{where}: record index {first + offset}"
            value = _parse(output, self.output_media, f"{at} (model output)")
            if self.join_source == "Input":
                value = self._join(_parse(source, self.input_media, at), value)
            selected = self.output_filter.select(value, at)
            rendered.append(_render(selected, self.output_media, at, "TransformOutput.Accept"))
        return rendered

    def _join(self, source: Any, output: Any) -> Any:
        if self.input_media == CSV:  # a CSV row is an array: the output's fields follow the input's
            return source + (output if isinstance(output, list) else [output])
        if isinstance(source, dict):
            # SageMakerOutput is reserved: an input field of that name is overwritten, as documented.
            return {**source, SAGEMAKER_OUTPUT: output}
        return {SAGEMAKER_INPUT: source, SAGEMAKER_OUTPUT: output}

    def _check(
        self, content_type: str | None, accept: str | None, split_type: str, assemble_with: str
    ) -> None:
        uses = self._describe()
        supported = ", ".join((CSV, *JSON_TYPES))
        if self.input_media not in (CSV, *JSON_TYPES):
            raise TransformError(
                f"TransformInput.ContentType: {content_type!r} cannot be used with {uses}; it needs one of {supported}"
            )
        if split_type in ("RecordIO", "TFRecord"):
            raise TransformError(
                f"TransformInput.SplitType: {split_type} records are binary and cannot be used with {uses}; use Line"
            )
        if split_type != "Line" and self.input_media != "application/json":
            raise TransformError(
                f"TransformInput.SplitType: {split_type!r} cannot be used with {uses} on {self.input_media} input; "
                "use Line"
            )
        if not self.transforms_output:
            return
        if self.output_media not in (CSV, *JSON_TYPES):
            raise TransformError(
                f"TransformOutput.Accept: {accept!r} cannot be used with {uses}; it needs one of {supported}"
            )
        if self.output_media == CSV and assemble_with != "Line":
            raise TransformError(
                f"TransformOutput.AssembleWith: {assemble_with!r} cannot be used with {uses} on text/csv output; "
                "use Line"
            )

    def _describe(self) -> str:
        parts = []
        if self.transforms_input:
            parts.append(f"DataProcessing.InputFilter {self.input_filter.expression!r}")
        if self.join_source == "Input":
            parts.append("DataProcessing.JoinSource 'Input'")
        if not self.output_filter.identity:
            parts.append(f"DataProcessing.OutputFilter {self.output_filter.expression!r}")
        return " and ".join(parts)


def _compile(expression: str, field: str) -> tuple[tuple[Any, ...], ...]:
    """The path as one segment tuple per union alternative; errors name the field and the value."""
    if len(expression) > MAX_PATH_LENGTH:
        raise TransformError(f"{field}: {expression!r} is longer than {MAX_PATH_LENGTH} characters")
    if not expression.startswith("$"):
        raise TransformError(f"{field}: {expression!r} is not a JSONPath; it must start with '$'")
    return tuple(_compile_one(alt, expression, field) for alt in _expand_unions(expression))


@functools.lru_cache(maxsize=256)
def _compile_one(alternative: str, expression: str, field: str) -> tuple[Any, ...]:
    try:
        tree = parse_jsonpath(alternative)
    except Exception as exc:  # jsonpath-ng raises lexer and parser errors of several types
        reason = " ".join(str(exc).split())
        raise TransformError(f"{field}: {expression!r} is not valid JSONPath ({reason})") from exc
    if not isinstance(_leftmost(tree), Root):
        raise TransformError(f"{field}: {expression!r} is not a JSONPath; it must start with '$'")
    segments = _segments(tree, expression, field)
    for segment in segments:
        if isinstance(segment, Slice) and segment.step is not None:
            raise TransformError(
                f"{field}: {expression!r} uses a slice step, which SageMaker does not support"
            )
    return tuple(segments)


def _segments(node: Any, expression: str, field: str) -> list[Any]:
    """The path's steps after ``$``, refusing any operator outside SageMaker's documented subset."""
    if isinstance(node, Child):
        if isinstance(node.right, Root):
            raise _unsupported(node.right, expression, field)
        return _segments(node.left, expression, field) + _segments(node.right, expression, field)
    if isinstance(node, Root):
        return []
    if isinstance(node, Fields | Index | Slice | Wildcard):
        return [node]
    raise _unsupported(node, expression, field)


def _leftmost(node: Any) -> Any:
    while hasattr(node, "left"):  # Child and the operators _segments refuses (.., where, union)
        node = node.left
    return node


def _unsupported(node: Any, expression: str, field: str) -> TransformError:
    return TransformError(
        f"{field}: {expression!r} uses {str(node)!r}, outside the JSONPath subset SageMaker supports "
        "($, .name, *, ['a','b'], [1,2], [start:end])"
    )


def _expand_unions(expression: str) -> list[str]:
    """``$[0,5:]`` -> ``$[0]``, ``$[5:]``: jsonpath-ng cannot parse an index and a slice in one
    bracket, which the API documents as a valid OutputFilter."""
    depth, quote, start = 0, "", -1
    for position, char in enumerate(expression):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth, start = depth + 1, position
        elif char == "]" and depth:
            depth -= 1
            parts = _split_top_level(expression[start + 1 : position])
            if len(parts) > 1 and any(":" in part for part in parts):
                prefix, suffix = expression[:start], expression[position + 1 :]
                return [alt for part in parts for alt in _expand_unions(f"{prefix}[{part.strip()}]{suffix}")]
    return [expression]


def _split_top_level(inside: str) -> list[str]:
    parts, quote, current = [], "", []
    for char in inside:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _is_definite(segment: Any) -> bool:
    if isinstance(segment, Index):
        return len(segment.indices) == 1
    return isinstance(segment, Fields) and len(segment.fields) == 1 and segment.fields != ("*",)


def _parse(record: bytes, media: str | None, where: str) -> Any:
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TransformError(f"{where}: not UTF-8 text (byte {exc.start})") from exc
    if media == CSV:
        try:
            rows = list(csv.reader([text], strict=True))
        except csv.Error as exc:
            raise TransformError(f"{where}: not a valid CSV row ({exc})") from exc
        return rows[0] if rows else []
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TransformError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc


def _render(value: Any, media: str | None, where: str, field: str) -> bytes:
    if media != CSV:
        return json.dumps(value, separators=_COMPACT, ensure_ascii=False).encode()
    if isinstance(value, dict):
        raise TransformError(
            f"{where}: the selection is a JSON object, which {field} text/csv cannot hold; select by index"
        )
    row = value if isinstance(value, list) else [value]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([_csv_field(item) for item in row])
    return buffer.getvalue().encode()


def _csv_field(item: Any) -> str:
    if isinstance(item, str):
        return item
    return "" if item is None else json.dumps(item, separators=_COMPACT, ensure_ascii=False)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "null"
