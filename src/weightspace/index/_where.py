"""A small, safe filter language over the metadata table: ``--where`` expressions.

Grammar (keywords are case-insensitive, column names are not)::

    expression := term ( OR term )*
    term       := factor ( AND factor )*
    factor     := NOT factor | '(' expression ')' | comparison
    comparison := COLUMN op literal | COLUMN [NOT] IN '(' literal ( ',' literal )* ')'
    op         := '=' | '!=' | '<' | '<=' | '>' | '>='
    literal    := 'single-quoted text' ('' inside is a quote) | number

Expressions are parsed into a tree and evaluated with pandas column operations: nothing is
ever passed to ``eval``, SQL or a shell. A missing value (NULL) makes a comparison unknown,
and unknown rows are not selected, with SQL's three-valued logic for ``AND``/``OR``/``NOT``.

An expression holds at most :data:`MAX_TERMS` comparisons and nests ``NOT`` and
parentheses at most :data:`MAX_DEPTH` deep. Chains of ``AND`` or ``OR`` become balanced
trees and are evaluated without recursion, so long expressions cannot exhaust the stack.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import WeightspaceError

_COMPARE = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_KEYWORDS = ("AND", "OR", "NOT", "IN")
MAX_DEPTH = 64
"""Most levels of ``NOT`` and parentheses nested in one expression."""
MAX_TERMS = 1000
"""Most comparisons (``=``, ``IN``, ...) in one expression."""
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<string>'(?:[^']|'')*')
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    """,
    re.VERBOSE,
)


class WhereError(WeightspaceError, ValueError):
    """A ``--where`` expression is malformed or names an unknown column."""


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, name, keyword, op, punct, end
    text: str
    position: int  # 1-based character position in the expression

    def describe(self) -> str:
        return "end of expression" if self.kind == "end" else repr(self.text)


Literal = str | float


@dataclass(frozen=True)
class Comparison:
    """``column op value``."""

    column: str
    op: str
    value: Literal


@dataclass(frozen=True)
class Membership:
    """``column [NOT] IN (values)``."""

    column: str
    values: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True)
class Not:
    operand: Expression


@dataclass(frozen=True)
class And:
    left: Expression
    right: Expression


@dataclass(frozen=True)
class Or:
    left: Expression
    right: Expression


Expression = Comparison | Membership | Not | And | Or


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos] == "'":
                raise WhereError(f"unterminated string starting at position {pos + 1}: {text!r}")
            raise WhereError(
                f"unexpected character {text[pos]!r} at position {pos + 1} in {text!r}"
            )
        kind = match.lastgroup
        assert kind is not None
        value = match.group()
        if kind == "name" and value.upper() in _KEYWORDS:
            kind, value = "keyword", value.upper()
        if kind == "op" and value == "<>":
            value = "!="
        if kind != "space":
            tokens.append(_Token(kind, value, pos + 1))
        pos = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.terms = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.i]

    def _error(self, expected: str) -> WhereError:
        token = self.current
        return WhereError(
            f"unexpected {token.describe()} at position {token.position} in {self.text!r} "
            f"(expected {expected})"
        )

    def _accept(self, kind: str, text: str | None = None) -> _Token | None:
        token = self.current
        if token.kind == kind and (text is None or token.text == text):
            self.i += 1
            return token
        return None

    def _expect(self, kind: str, text: str, expected: str) -> None:
        if self._accept(kind, text) is None:
            raise self._error(expected)

    def parse(self) -> Expression:
        if self.current.kind == "end":
            raise WhereError("empty --where expression; e.g. \"dataset = 'digits'\"")
        expression = self._or()
        if self.current.kind != "end":
            raise self._error("AND, OR or the end of the expression")
        return expression

    def _or(self) -> Expression:
        terms = [self._and()]
        while self._accept("keyword", "OR"):
            terms.append(self._and())
        return _balanced(Or, terms)

    def _and(self) -> Expression:
        factors = [self._not()]
        while self._accept("keyword", "AND"):
            factors.append(self._not())
        return _balanced(And, factors)

    def _enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise WhereError(
                f"--where nests NOT and parentheses more than {MAX_DEPTH} levels deep (at "
                f"position {token.position}); simplify the expression"
            )

    def _not(self) -> Expression:
        token = self.current
        if self._accept("keyword", "NOT"):
            self._enter(token)
            node: Expression = Not(self._not())
        elif self._accept("punct", "("):
            self._enter(token)
            node = self._or()
            self._expect("punct", ")", "')'")
        else:
            return self._comparison()
        self.depth -= 1
        return node

    def _comparison(self) -> Expression:
        column = self._accept("name")
        if column is None:
            raise self._error("a column name, NOT or '('")
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise WhereError(
                f"--where has more than {MAX_TERMS} comparisons (at position {column.position}); "
                "use IN (...) lists or a shorter expression"
            )
        if self._accept("keyword", "NOT"):
            self._expect("keyword", "IN", "IN after NOT")
            return Membership(column.text, self._list(), negated=True)
        if self._accept("keyword", "IN"):
            return Membership(column.text, self._list(), negated=False)
        op = self._accept("op")
        if op is None:
            raise self._error(f"a comparison operator ({' '.join(_COMPARE)}) or IN")
        return Comparison(column.text, op.text, self._literal())

    def _list(self) -> tuple[Literal, ...]:
        self._expect("punct", "(", "'(' after IN")
        values = [self._literal()]
        while self._accept("punct", ","):
            values.append(self._literal())
        self._expect("punct", ")", "',' or ')'")
        return tuple(values)

    def _literal(self) -> Literal:
        token = self._accept("string") or self._accept("number")
        if token is None:
            raise self._error("a quoted string like 'digits' or a number")
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        return float(token.text)


def _balanced(kind: type[And] | type[Or], nodes: list[Expression]) -> Expression:
    """``nodes`` joined by ``kind`` as a balanced tree (depth log2 n; same rows selected)."""
    while len(nodes) > 1:
        pairs = range(0, len(nodes) - 1, 2)
        nodes = [kind(nodes[k], nodes[k + 1]) for k in pairs] + nodes[len(nodes) & ~1 :]
    return nodes[0]


def parse_where(text: str) -> Expression:
    """Parse a ``--where`` expression into a tree.

    Raises:
        WhereError: naming the offending token and its position.

    Example:
        >>> parse_where("dataset = 'digits' AND test_accuracy > 0.9")
        And(left=Comparison(column='dataset', op='=', value='digits'), right=Comparison(column='test_accuracy', op='>', value=0.9))
    """  # noqa: E501
    if not isinstance(text, str):
        raise WhereError(f"a --where expression must be a string, got {type(text).__name__}")
    return _Parser(text).parse()


def _operands(node: Expression) -> tuple[Expression, ...]:
    if isinstance(node, Not):
        return (node.operand,)
    if isinstance(node, (And, Or)):
        return (node.left, node.right)
    return ()


def _columns_of(node: Expression) -> list[str]:
    """The columns compared, left to right (without recursion)."""
    columns, todo = [], [node]
    while todo:
        current = todo.pop()
        if isinstance(current, (Comparison, Membership)):
            columns.append(current.column)
        todo.extend(reversed(_operands(current)))
    return columns


def _check_columns(node: Expression, frame: pd.DataFrame) -> None:
    known = [str(c) for c in frame.columns]
    for column in _columns_of(node):
        if column not in frame.columns:
            close = difflib.get_close_matches(column, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise WhereError(
                f"unknown column {column!r} in --where{hint}; known columns: {', '.join(known)}"
            )


def _typed(series: pd.Series, column: str, values: Sequence[Literal]) -> Sequence[Literal]:
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    for value in values:
        if numeric and isinstance(value, str):
            raise WhereError(
                f"column {column!r} holds numbers; compare it with a number, not {value!r}"
            )
        if not numeric and not isinstance(value, str):
            raise WhereError(
                f"column {column!r} holds text; compare it with a quoted string like "
                f"'{value:g}', not {value:g}"
            )
    return values


def _evaluate(node: Expression, frame: pd.DataFrame) -> pd.Series:
    """Three-valued result (pandas ``boolean`` dtype: True, False or NA per row).

    Evaluated in post-order with explicit stacks, however deep the tree.
    """
    values: list[pd.Series] = []
    todo: list[tuple[Expression, bool]] = [(node, False)]
    while todo:
        current, operands_done = todo.pop()
        if isinstance(current, (Comparison, Membership)):
            values.append(_compare(current, frame))
        elif not operands_done:
            todo.append((current, True))
            todo.extend((operand, False) for operand in reversed(_operands(current)))
        elif isinstance(current, Not):
            values.append(~values.pop())
        else:
            right, left = values.pop(), values.pop()
            values.append(left & right if isinstance(current, And) else left | right)
    return values[0]


def _compare(node: Comparison | Membership, frame: pd.DataFrame) -> pd.Series:
    """Three-valued result of one comparison: NA where the value is missing."""
    series = frame[node.column]
    missing = series.isna().to_numpy()
    if isinstance(node, Comparison):
        (value,) = _typed(series, node.column, [node.value])
        raw = _COMPARE[node.op](series[~missing], value)
    else:
        values = _typed(series, node.column, node.values)
        raw = series[~missing].isin(list(values))
        if node.negated:
            raw = ~raw
    result = pd.Series(pd.NA, index=frame.index, dtype="boolean")
    result[~missing] = raw.to_numpy(dtype=bool)
    return result


def where_mask(frame: pd.DataFrame, expression: str | Expression) -> np.ndarray:
    """Which rows of ``frame`` satisfy a ``--where`` expression.

    Args:
        frame: the metadata table (one row per model).
        expression: the expression text, or a tree from :func:`parse_where`.

    Returns:
        A boolean array ``[len(frame)]``; rows where the expression is unknown (a compared
        value is missing) are False.

    Raises:
        WhereError: a malformed expression, an unknown column, or a number compared with a
            text column (or the reverse).
    """
    node = parse_where(expression) if isinstance(expression, str) else expression
    _check_columns(node, frame)
    if len(frame) == 0:
        return np.zeros(0, dtype=bool)
    return _evaluate(node, frame).fillna(False).to_numpy(dtype=bool)
