"""The run query language: `filter` and `order_by` strings parsed, checked and compiled to SQL.

    filter:   metrics.accuracy >= 0.9 AND tags.team = 'vision' AND status != 'failed'
    order_by: metrics.loss asc, created_at

Metrics compare through the latest-values table and tags through the tags table, so a filter never scans
logged points. A run without the metric or tag never matches a comparison on it, and sorts last.
Errors name the part of the text that could not be read, so the user can fix it.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.store.records import RunStatus
from edgewise.cloud.store.schema import latest_metrics, run_tags, runs
from sqlalchemy.sql.elements import ColumnElement

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_OP_ALIASES = {"==": "=", "<>": "!="}
_ORDER_FIELDS = ("created_at", "started_at", "ended_at", "duration", "name", "status")
_ASCENDING_BY_DEFAULT = ("name", "status", "tags")

_SPACE = re.compile(r"\s*")
_FIELD = re.compile(r"(?i:(metrics|tags)\.)|(\w+)")
_KEY = re.compile(r"`([^`]+)`|\"([^\"]+)\"|([A-Za-z0-9_\-./:]+)")
_OP = re.compile(r"<=|>=|!=|<>|==|=|<|>")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")
_STRING = re.compile(r"'((?:[^']|'')*)'|\"((?:[^\"]|\"\")*)\"")
_AND = re.compile(r"(?i:and)\b")
_DIRECTION = re.compile(r"(?i:(asc|desc))\b")


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One `field op value` of a filter; `key` is the metric name or tag key."""

    field: str  # "metrics", "tags", "status" or "name"
    key: str | None
    op: str
    value: float | str


@dataclass(frozen=True, kw_only=True)
class OrderKey:
    field: str  # "metrics", "tags" or one of the run's columns
    key: str | None
    descending: bool


class _Scanner:
    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.what = what
        self.pos = 0

    def skip_space(self) -> None:
        match = _SPACE.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def take(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        self.skip_space()
        match = pattern.match(self.text, self.pos)
        if match:
            self.pos = match.end()
        return match

    def fail(self, expected: str, *, at: int | None = None) -> InvalidInputError:
        start = self.pos if at is None else at
        rest = self.text[start:]
        part = repr(rest[:40] + ("..." if len(rest) > 40 else "")) if rest else "the end"
        return InvalidInputError(
            f"could not read the {self.what} {self.text!r} at {part} (character {start + 1}): expected {expected}"
        )

    def field(self, *, allowed: tuple[str, ...]) -> tuple[str, str | None]:
        start = self.pos
        match = self.take(_FIELD)
        if match is None:
            raise self.fail(f"one of metrics.NAME, tags.KEY, {', '.join(allowed)}")
        if match.group(1):
            prefix = match.group(1).lower()
            key = _KEY.match(self.text, self.pos)
            if key is None:
                raise self.fail(f"a {'metric name' if prefix == 'metrics' else 'tag key'} after '{prefix}.'")
            self.pos = key.end()
            return prefix, next(g for g in key.groups() if g is not None)
        name = match.group(2).lower()
        if name not in allowed:
            raise self.fail(f"one of metrics.NAME, tags.KEY, {', '.join(allowed)}", at=start)
        return name, None


def parse_filter(text: str | None) -> list[Comparison]:
    """The comparisons of a filter, all of which must hold; empty for no filter."""
    if text is None or not text.strip():
        return []
    scan = _Scanner(text, "filter")
    found: list[Comparison] = []
    while True:
        scan.skip_space()
        field_start = scan.pos
        field, key = scan.field(allowed=("status", "name"))
        op_match = scan.take(_OP)
        if op_match is None:
            raise scan.fail("an operator: = != < <= > >=")
        op = _OP_ALIASES.get(op_match.group(0), op_match.group(0))
        value_start = scan.pos
        value: float | str
        if field == "metrics":
            number = scan.take(_NUMBER)
            if number is None:
                raise scan.fail(f"a number to compare metrics.{key} with")
            value = float(number.group(0))
        else:
            string = scan.take(_STRING)
            if string is None:
                raise scan.fail(f"a quoted text to compare {field if key is None else f'{field}.{key}'} with")
            single, double = string.group(1), string.group(2)
            value = single.replace("''", "'") if single is not None else double.replace('""', '"')
        if field == "status":
            if op not in ("=", "!="):
                raise scan.fail("= or != (statuses have no order)", at=field_start)
            if value not in {s.value for s in RunStatus}:
                raise scan.fail(f"a status, one of {', '.join(s.value for s in RunStatus)}", at=value_start)
        found.append(Comparison(field=field, key=key, op=op, value=value))
        if scan.at_end():
            return found
        if scan.take(_AND) is None:
            raise scan.fail("AND or the end of the filter")


def parse_order_by(text: str | None) -> list[OrderKey]:
    """The sort keys, most significant first; empty for the default order (newest first)."""
    if text is None or not text.strip():
        return []
    scan = _Scanner(text, "order_by")
    found: list[OrderKey] = []
    while True:
        field, key = scan.field(allowed=_ORDER_FIELDS)
        direction = scan.take(_DIRECTION)
        if direction is not None:
            descending = direction.group(1).lower() == "desc"
        else:
            descending = field not in _ASCENDING_BY_DEFAULT
        found.append(OrderKey(field=field, key=key, descending=descending))
        if scan.at_end():
            return found
        if scan.take(re.compile(",")) is None:
            raise scan.fail("asc, desc, a comma or the end of the order_by")


def filter_clause(text: str | None) -> ColumnElement[bool] | None:
    """The WHERE condition over `runs` for a filter string, or None for no filter."""
    conditions = [_compile_comparison(c) for c in parse_filter(text)]
    if not conditions:
        return None
    return sa.and_(*conditions)


def order_clauses(text: str | None) -> list[ColumnElement[Any]]:
    """ORDER BY terms over `runs`; always ends with creation time and id so pages are stable."""
    terms: list[ColumnElement[Any]] = []
    for key in parse_order_by(text):
        column = _order_column(key)
        terms.append(column.desc().nulls_last() if key.descending else column.asc().nulls_last())
    terms.extend([runs.c.created_at.desc(), runs.c.id.desc()])
    return terms


def _compile_comparison(comparison: Comparison) -> ColumnElement[bool]:
    compare = _OPS[comparison.op]
    if comparison.field == "metrics":
        return sa.exists().where(
            latest_metrics.c.run_id == runs.c.id,
            latest_metrics.c.name == comparison.key,
            compare(latest_metrics.c.value, comparison.value),
        )
    if comparison.field == "tags":
        return sa.exists().where(
            run_tags.c.run_id == runs.c.id,
            run_tags.c.key == comparison.key,
            compare(run_tags.c.value, comparison.value),
        )
    column = runs.c.status if comparison.field == "status" else runs.c.name
    result: ColumnElement[bool] = compare(column, comparison.value)
    return result


def _order_column(key: OrderKey) -> ColumnElement[Any]:
    if key.field == "metrics":
        return (
            sa.select(latest_metrics.c.value)
            .where(latest_metrics.c.run_id == runs.c.id, latest_metrics.c.name == key.key)
            .scalar_subquery()
        )
    if key.field == "tags":
        return (
            sa.select(run_tags.c.value)
            .where(run_tags.c.run_id == runs.c.id, run_tags.c.key == key.key)
            .scalar_subquery()
        )
    if key.field == "duration":
        now = sa.literal(time.time(), sa.Float)
        return sa.func.coalesce(runs.c.ended_at, now) - runs.c.started_at
    column: ColumnElement[Any] = runs.c[key.field]
    return column
