"""The run query language parser, without a database."""

from __future__ import annotations

import pytest
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.store.query import Comparison, OrderKey, order_clauses, parse_filter, parse_order_by


def test_empty_filter_and_order() -> None:
    assert parse_filter(None) == parse_filter("  ") == []
    assert parse_order_by(None) == parse_order_by("") == []
    assert len(order_clauses(None)) == 2  # creation time and id keep pages stable


def test_filter_comparisons() -> None:
    text = "metrics.accuracy >= 0.9 and tags.team = 'vision' AND status != \"failed\" AnD name<'run''s'"
    assert parse_filter(text) == [
        Comparison(field="metrics", key="accuracy", op=">=", value=0.9),
        Comparison(field="tags", key="team", op="=", value="vision"),
        Comparison(field="status", key=None, op="!=", value="failed"),
        Comparison(field="name", key=None, op="<", value="run's"),
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("metrics.loss<-1.5e-3", -1.5e-3),
        ("metrics.loss = 3", 3.0),
        ("metrics.loss == .5", 0.5),
        ("METRICS.loss<>7", 7.0),
    ],
)
def test_numbers_and_operator_spellings(text: str, value: float) -> None:
    (comparison,) = parse_filter(text)
    assert comparison.field == "metrics" and comparison.key == "loss" and comparison.value == value


def test_quoted_and_dotted_keys() -> None:
    assert parse_filter("metrics.`val loss` < 1 AND tags.\"my key\" = 'x' AND metrics.eval/acc.top-1 > 0") == [
        Comparison(field="metrics", key="val loss", op="<", value=1.0),
        Comparison(field="tags", key="my key", op="=", value="x"),
        Comparison(field="metrics", key="eval/acc.top-1", op=">", value=0.0),
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("metrics.acc > high", "'high'"),
        ("metrics.acc 0.5", "'0.5'"),
        ("metrics. > 1", "a metric name"),
        ("params.lr = 0.1", "'params.lr"),
        ("tags.team = vision", "'vision'"),
        ("status = 'sleeping'", "'sleeping'"),
        ("status > 'queued'", "statuses have no order"),
        ("metrics.acc > 0.5 AND", "the end"),
        ("metrics.acc > 0.5 OR metrics.acc < 0.1", "'OR"),
        ("name = 'unterminated", "'unterminated"),
        ("metrics.acc > 1.2.3", "'1.2.3'"),
    ],
)
def test_malformed_filters_name_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_filter(text)
    assert named in str(caught.value)


def test_order_keys_and_default_directions() -> None:
    assert parse_order_by("metrics.loss, name, created_at asc, tags.team DESC, duration, status") == [
        OrderKey(field="metrics", key="loss", descending=True),
        OrderKey(field="name", key=None, descending=False),
        OrderKey(field="created_at", key=None, descending=False),
        OrderKey(field="tags", key="team", descending=True),
        OrderKey(field="duration", key=None, descending=True),
        OrderKey(field="status", key=None, descending=False),
    ]
    assert len(order_clauses("metrics.loss asc, ended_at")) == 4


@pytest.mark.parametrize(
    ("text", "named"),
    [("size desc", "'size"), ("name upward", "'upward'"), ("name asc desc", "'desc'"), ("metrics.", "a metric name")],
)
def test_malformed_order_by(text: str, named: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_order_by(text)
    assert named in str(caught.value)
