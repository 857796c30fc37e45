"""Ingest's Prometheus instruments (docs/metrics.md): records accepted, and refusals by reason.

A refusal is counted per request under one of a fixed set of reasons (one per error status), so a
dashboard can tell a client sending bad rows from a store outage. Records are counted too where
the request's records were read: an invalid or conflicting batch is refused whole.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

# Why a request was refused: the reason label, one per error status ingest answers.
UNKNOWN_TASK = "unknown_task"  # 404; counted under task "" (the path's name is not a label)
MALFORMED = "malformed"  # 400: not JSON, or not the records' format
TOO_LARGE = "too_large"  # 413: the body or the batch
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
INVALID = "invalid"  # 422: records that do not fit the task's spec
CONFLICT = "conflict"  # 409: ids that name other events
STORE_UNAVAILABLE = "store_unavailable"  # 503: nothing stored, retry
REASONS = (
    UNKNOWN_TASK,
    MALFORMED,
    TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    INVALID,
    CONFLICT,
    STORE_UNAVAILABLE,
)
# Event types ingest appends, as the `kind` label.
KINDS = {"ObservationRecorded": "observation", "LabelRecorded": "label"}

ACCEPTED = Counter(
    "continuo_ingest_records_accepted_total",
    "Records stored as new events (a labelled observation counts once, as an observation)",
    ["task", "kind"],
)
DUPLICATES = Counter(
    "continuo_ingest_records_duplicate_total",
    "Records already stored (a retry with the same ids): answered 202, stored once",
    ["task", "kind"],
)
REQUESTS_REFUSED = Counter(
    "continuo_ingest_requests_refused_total",
    "Requests refused, nothing stored, by reason",
    ["task", "reason"],
)
RECORDS_REFUSED = Counter(
    "continuo_ingest_records_refused_total",
    "Records in requests refused after their records were read (reasons invalid, conflict)",
    ["task", "reason"],
)


def prepare(tasks: Iterable[str]) -> None:
    """Every series of the known tasks, at 0: a rate is defined from the first scrape."""
    REQUESTS_REFUSED.labels("", UNKNOWN_TASK)
    for task in tasks:
        for kind in KINDS.values():
            ACCEPTED.labels(task, kind)
            DUPLICATES.labels(task, kind)
        for reason in REASONS[1:]:  # an unknown task is counted under task ""
            REQUESTS_REFUSED.labels(task, reason)
        for reason in (INVALID, CONFLICT):
            RECORDS_REFUSED.labels(task, reason)


def appended(task: str, event_type: str, accepted: int, duplicates: int) -> None:
    kind = KINDS.get(event_type, event_type)
    ACCEPTED.labels(task, kind).inc(accepted)
    DUPLICATES.labels(task, kind).inc(duplicates)


def refused(task: str, reason: str, records: int = 0) -> None:
    REQUESTS_REFUSED.labels(task, reason).inc()
    if records:
        RECORDS_REFUSED.labels(task, reason).inc(records)
