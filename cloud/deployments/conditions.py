"""Target conditions over device tags, as IoT Hub writes them: `tags.site = 'berlin' AND tags.tier = 'prod'`.

Grammar (keywords case-insensitive):
    expr   := term (OR term)*
    term   := factor (AND factor)*
    factor := NOT factor | '(' expr ')' | tags.KEY (= | !=) 'text' | tags.KEY [NOT] IN ('a', 'b', ...)
              | tags.KEY EXISTS | tags.KEY IS [NOT] NULL
A condition is parsed once when a deployment is created, so a bad one is refused with the column it broke at.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgewise.cloud.errors import InvalidInputError

Predicate = Callable[[Mapping[str, str]], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<op>!=|<>|=|\(|\)|,)|(?P<tag>tags\.[A-Za-z0-9_.:/-]+)|(?P<word>[A-Za-z]+))",
)


@dataclass(frozen=True)
class _Token:
    kind: str  # string | op | tag | word | end
    text: str
    column: int  # 1-based


@dataclass(frozen=True)
class Condition:
    """A parsed target condition: `matches(tags)` says whether a device with these tags is targeted."""

    text: str
    _predicate: Predicate

    def matches(self, tags: Mapping[str, str]) -> bool:
        return self._predicate(tags)


def parse_condition(text: str) -> Condition:
    """Parse `text`; InvalidInputError names the column where it stops making sense."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("empty target condition: write e.g. tags.site = 'berlin' AND tags.tier = 'prod'")
    parser = _Parser(text, _tokens(text))
    predicate = parser.expression()
    parser.expect_end()
    return Condition(text.strip(), predicate)


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            column = position + 1 + (len(text[position:]) - len(text[position:].lstrip()))
            raise _error(text, column, "unexpected character")
        kind = match.lastgroup or "word"
        value = match.group(kind)
        tokens.append(_Token(kind, value, match.start(kind) + 1))
        position = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _error(text: str, column: int, problem: str) -> InvalidInputError:
    return InvalidInputError(f"bad target condition at column {column}: {problem}\n  {text}\n  {' ' * (column - 1)}^")


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        if self.current.kind == "word" and self.current.text.lower() == word:
            self.index += 1
            return True
        return False

    def fail(self, problem: str) -> InvalidInputError:
        return _error(self.text, self.current.column, problem)

    def expect_end(self) -> None:
        if self.current.kind != "end":
            raise self.fail(f"unexpected {self.current.text!r}; join comparisons with AND or OR")

    def expression(self) -> Predicate:
        parts = [self.term()]
        while self.keyword("or"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda tags: any(p(tags) for p in parts))

    def term(self) -> Predicate:
        parts = [self.factor()]
        while self.keyword("and"):
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda tags: all(p(tags) for p in parts))

    def factor(self) -> Predicate:
        if self.keyword("not"):
            inner = self.factor()
            return lambda tags: not inner(tags)
        if self.current.kind == "op" and self.current.text == "(":
            self.advance()
            inner = self.expression()
            if not (self.current.kind == "op" and self.current.text == ")"):
                raise self.fail("expected ')' to close the parenthesis")
            self.advance()
            return inner
        if self.current.kind != "tag":
            raise self.fail("expected a comparison on tags.KEY (e.g. tags.site = 'berlin')")
        key = self.advance().text[len("tags.") :]
        return self.comparison(key)

    def comparison(self, key: str) -> Predicate:
        token = self.current
        if token.kind == "op" and token.text in ("=", "!=", "<>"):
            self.advance()
            value = self.string()
            if token.text == "=":
                return lambda tags: tags.get(key) == value
            return lambda tags: key in tags and tags[key] != value
        if self.keyword("exists"):
            return lambda tags: key in tags
        if self.keyword("is"):
            negate = self.keyword("not")
            if not self.keyword("null"):
                raise self.fail("expected NULL after IS")
            return (lambda tags: key in tags) if negate else (lambda tags: key not in tags)
        negate = self.keyword("not")
        if self.keyword("in"):
            values = self.string_list()
            if negate:
                return lambda tags: key in tags and tags[key] not in values
            return lambda tags: tags.get(key) in values
        raise self.fail("expected =, !=, IN (...), NOT IN (...), EXISTS or IS [NOT] NULL after the tag")

    def string(self) -> str:
        if self.current.kind != "string":
            raise self.fail("expected a quoted value such as 'berlin'")
        return self.advance().text[1:-1].replace("''", "'")

    def string_list(self) -> frozenset[str]:
        if not (self.current.kind == "op" and self.current.text == "("):
            raise self.fail("expected '(' and a list of quoted values after IN")
        self.advance()
        values = {self.string()}
        while self.current.kind == "op" and self.current.text == ",":
            self.advance()
            values.add(self.string())
        if not (self.current.kind == "op" and self.current.text == ")"):
            raise self.fail("expected ',' or ')' in the IN list")
        self.advance()
        return frozenset(values)
