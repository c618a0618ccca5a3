"""Two versions of the local registry side by side: metrics with B - A, and what changed in their lineage.

The lineage compared is what the local registry holds for each version (``LocalRegistry.show`` plus the
``provenance`` recorded at registration, see ``mlops.local.handlers.register_model``):

- ``code``: the content hash of each code bundle the execution's definition names (changed/added/removed);
- ``data``: per input channel of the training step, the sha256 of the objects under it at registration;
- ``model``: the model artifact's URL and sha256;
- ``hyperparameter``: the training job's HyperParameters; ``parameter``: the execution's pipeline parameters.
- ``source``: the git commit and dirty state of the work tree the run started from.

A version registered before provenance was recorded has no data digests, artifact digest or
hyperparameters: those rows say ``not recorded`` rather than guess. A run outside a git work tree records no
git commit; the comparison says so in ``notes``.
"""

from __future__ import annotations

from typing import Any

SAME, CHANGED, ADDED, REMOVED, NOT_RECORDED = "same", "changed", "added", "removed", "not recorded"


def flat_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """``{name: value}`` from SageMaker's model-quality report shape (``{"metrics": {"m": {"value": v}}}``).

    A name that two report files or sections both carry is qualified as ``file:section.name``.
    """
    found: dict[str, float] = {}
    for where, entry in (metrics or {}).items():
        content = entry.get("Content") if isinstance(entry, dict) else None
        if not isinstance(content, dict):
            continue
        for section_name, section in content.items():
            if not isinstance(section, dict):
                continue
            for name, val in section.items():
                value = val.get("value") if isinstance(val, dict) else val
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                key = name if name not in found else f"{where}:{section_name}.{name}"
                found[key] = float(value)
    return found


def _metric_rows(a: dict[str, float], b: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(a.keys() | b.keys()):
        va, vb = a.get(name), b.get(name)
        rows.append({"metric": name, "a": va, "b": vb, "diff": None if va is None or vb is None else vb - va})
    return rows


def _diff(kind: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per key of either side; ``None`` for a whole side means that side recorded nothing."""
    if a is None and b is None:
        return [{"kind": kind, "name": "-", "a": None, "b": None, "change": NOT_RECORDED}]
    rows = []
    for name in sorted((a or {}).keys() | (b or {}).keys()):
        va, vb = (a or {}).get(name), (b or {}).get(name)
        if a is None or b is None:
            change = NOT_RECORDED
        elif name not in a:
            change = ADDED
        elif name not in b:
            change = REMOVED
        else:
            change = SAME if va == vb else CHANGED
        rows.append({"kind": kind, "name": name, "a": va, "b": vb, "change": change})
    return rows


def _recorded(doc: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(provenance, its training part)``; None where the version was registered without them."""
    provenance = doc.get("provenance")
    if not isinstance(provenance, dict):
        return None, None
    training = provenance.get("training")
    return provenance, training if isinstance(training, dict) else None


def _source(provenance: dict[str, Any] | None) -> dict[str, Any] | None:
    """The git commit and dirty state the version was built from; None where none was recorded."""
    source = (provenance or {}).get("source")
    if not isinstance(source, dict):
        return None
    return {"git commit": source.get("git_commit"), "git dirty": source.get("git_dirty")}


def _data(training: dict[str, Any] | None) -> dict[str, Any] | None:
    if training is None:
        return None
    return {name: ch.get("sha256") for name, ch in (training.get("input_data") or {}).items()}


def _data_uris(training: dict[str, Any] | None) -> dict[str, Any] | None:
    if training is None:
        return None
    return {name: ch.get("uri") for name, ch in (training.get("input_data") or {}).items()}


def compare_versions(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Compare two ``LocalRegistry.show`` documents (A then B); the result is JSON-ready."""
    prov_a, train_a = _recorded(a)
    prov_b, train_b = _recorded(b)
    lin_a, lin_b = a.get("lineage") or {}, b.get("lineage") or {}

    def artifact_digest(prov):
        return None if prov is None else {"artifact sha256": prov.get("model_data_sha256")}

    lineage = [
        *_diff("code", lin_a.get("code_bundles") or {}, lin_b.get("code_bundles") or {}),
        *_diff("data", _data(train_a), _data(train_b)),
        *_diff("data uri", _data_uris(train_a), _data_uris(train_b)),
        *_diff("model", {"artifact url": a.get("model_data_url")}, {"artifact url": b.get("model_data_url")}),
        *_diff("model", artifact_digest(prov_a), artifact_digest(prov_b)),
        *_diff(
            "hyperparameter",
            None if train_a is None else train_a.get("hyperparameters") or {},
            None if train_b is None else train_b.get("hyperparameters") or {},
        ),
        *_diff("parameter", lin_a.get("parameters"), lin_b.get("parameters")),
    ]
    notes = []
    src_a, src_b = _source(prov_a), _source(prov_b)
    if src_a is None or src_b is None:
        notes.append("git commit: not recorded for a side (run outside a git work tree, or before it was)")
    lineage[:0] = _diff("source", src_a, src_b)
    for label, prov, train, doc in (("A", prov_a, train_a, a), ("B", prov_b, train_b, b)):
        name = f"{doc['group_name']}/{doc['version']}"
        if prov is None:
            notes.append(f"{label} ({name}) was registered before data digests were recorded")
        elif train is None:
            notes.append(f"{label} ({name}): no training step of its execution produced its model artifact")
    changed = [r for r in lineage if r["change"] in (CHANGED, ADDED, REMOVED)]
    return {
        "a": _summary(a),
        "b": _summary(b),
        "metrics": _metric_rows(flat_metrics(a.get("metrics")), flat_metrics(b.get("metrics"))),
        "lineage": lineage,
        "changed": sorted({r["kind"] for r in changed}),
        "notes": notes,
    }


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    lineage = doc.get("lineage") or {}
    return {
        "version": f"{doc['group_name']}/{doc['version']}",
        "arn": doc.get("arn"),
        "approval_status": doc.get("approval_status"),
        "created_at": doc.get("created_at"),
        "execution_id": lineage.get("execution_id"),
    }


def compare(registry, a: str, b: str, group: str | None = None) -> dict[str, Any]:
    """Compare versions ``a`` and ``b`` (``GROUP/N``, ``N`` with ``group``, or an ARN) of a local registry."""
    return compare_versions(registry.show(a, group=group), registry.show(b, group=group))
