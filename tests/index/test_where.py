import numpy as np
import pandas as pd
import pytest

from weightspace.index import WhereError, parse_where, where_mask
from weightspace.index._where import And, Comparison, Membership, Not, Or


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "id": pd.Series(["a", "b", "c", "d"], dtype="str"),
            "dataset": pd.Series(["digits", "wine", "digits", None], dtype="str"),
            "family": pd.Series(["mlp", "mlp", "vgg", "bert"], dtype="str"),
            "test_accuracy": [0.95, 0.5, 0.85, np.nan],
            "epoch": pd.Series([1, 8, 4, None], dtype="Int64"),
        }
    )


def selected(frame, expression):
    return list(frame["id"][where_mask(frame, expression)])


def test_parse_builds_the_tree_with_precedence():
    tree = parse_where("a = 'x' OR b > 1 AND NOT c IN ('p', 'q''s')")
    assert tree == Or(
        Comparison("a", "=", "x"),
        And(Comparison("b", ">", 1.0), Not(Membership("c", ("p", "q's"), negated=False))),
    )
    assert parse_where("(a = 1 OR b = 2) and c <> 3") == And(
        Or(Comparison("a", "=", 1.0), Comparison("b", "=", 2.0)), Comparison("c", "!=", 3.0)
    )


@pytest.mark.parametrize(
    ("expression", "ids"),
    [
        ("dataset = 'digits' AND test_accuracy > 0.9", ["a"]),
        ("dataset = 'digits'", ["a", "c"]),
        ("dataset != 'digits'", ["b"]),  # missing values are never selected
        ("test_accuracy >= 0.85", ["a", "c"]),
        ("test_accuracy < 0.85", ["b"]),
        ("test_accuracy <= 0.5 OR family = 'vgg'", ["b", "c"]),
        ("family IN ('vgg', 'bert')", ["c", "d"]),
        ("family NOT IN ('vgg', 'bert')", ["a", "b"]),
        ("NOT test_accuracy > 0.9", ["b", "c"]),  # SQL logic: NOT unknown is unknown
        ("NOT (dataset = 'digits' OR family = 'bert')", ["b"]),
        ("epoch > 1 and epoch < 8", ["c"]),
        ("epoch IN (1, 8)", ["a", "b"]),
        ("test_accuracy > -1e3 AND test_accuracy > .9", ["a"]),
    ],
)
def test_expressions_select_the_right_rows(frame, expression, ids):
    assert selected(frame, expression) == ids


def test_missing_value_with_or_is_true_when_the_other_side_is(frame):
    assert selected(frame, "test_accuracy > 0.9 OR family = 'bert'") == ["a", "d"]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("task = 'x'; DROP TABLE models", r"unexpected character ';' at position 11"),
        ("__import__('os')", r"unexpected '\(' at position 11 .*expected a comparison operator"),
        ("dataset = 'digits' OR", r"unexpected end of expression at position 22"),
        ("dataset = digits", r"unexpected 'digits' at position 11 .*quoted string"),
        ("dataset == 'digits'", r"unexpected '=' at position 10"),
        ("(dataset = 'digits'", r"unexpected end of expression .*expected '\)'"),
        ("dataset = 'digits", r"unterminated string starting at position 11"),
        ("dataset IN 'digits'", r"unexpected \"'digits'\" at position 12 .*'\(' after IN"),
        ("dataset = 'a' family = 'b'", r"unexpected 'family' at position 15 .*AND, OR"),
        ("", "empty --where expression"),
        ("   ", "empty --where expression"),
    ],
)
def test_syntax_errors_name_token_and_position(frame, expression, message):
    with pytest.raises(WhereError, match=message):
        where_mask(frame, expression)


def test_unknown_column_lists_known_ones(frame):
    with pytest.raises(
        WhereError,
        match=r"unknown column 'datset' .*did you mean 'dataset'.*known columns: id, dataset, "
        r"family, test_accuracy, epoch",
    ):
        where_mask(frame, "datset = 'digits'")
    with pytest.raises(WhereError, match="unknown column 'os'"):
        where_mask(frame, "os = 'system'")


def test_types_must_match_the_column(frame):
    with pytest.raises(WhereError, match="'test_accuracy' holds numbers; .* not 'high'"):
        where_mask(frame, "test_accuracy > 'high'")
    with pytest.raises(WhereError, match="'family' holds text; .*'1'"):
        where_mask(frame, "family IN ('mlp', 1)")


def test_where_error_is_a_value_error(frame):
    with pytest.raises(ValueError):
        where_mask(frame, "1 = 1")


def test_empty_frame_gives_empty_mask(frame):
    assert where_mask(frame.iloc[:0], "family = 'mlp'").shape == (0,)


def test_deep_nesting_is_a_one_line_error_not_a_recursion_error(frame):
    with pytest.raises(WhereError, match=r"more than 64 levels deep \(at position 65\)"):
        where_mask(frame, "(" * 330 + "family = 'mlp'" + ")" * 330)
    with pytest.raises(WhereError, match="more than 64 levels deep"):
        where_mask(frame, "NOT " * 65 + "family = 'mlp'")
    assert selected(frame, "(" * 64 + "family = 'mlp'" + ")" * 64) == ["a", "b"]
    assert selected(frame, "NOT " * 64 + "family = 'mlp'") == ["a", "b"]
    assert selected(frame, "NOT (" * 32 + "family = 'mlp'" + ")" * 32) == ["a", "b"]


def test_a_thousand_or_terms_work_and_more_are_refused(frame):
    terms = [f"epoch = {k}" for k in range(998)] + ["family = 'vgg'", "dataset = 'wine'"]
    expression = " OR ".join(terms)
    assert selected(frame, expression) == ["a", "b", "c"]  # d has no epoch, family bert
    tree = parse_where(expression)
    assert tree == parse_where(expression) and repr(tree).startswith("Or(")  # shallow tree
    assert selected(frame, " AND ".join(["test_accuracy > 0.6"] * 1000)) == ["a", "c"]
    with pytest.raises(WhereError, match=r"more than 1000 comparisons \(at position \d+\)"):
        where_mask(frame, f"{expression} OR family = 'mlp'")


def test_chains_are_balanced_but_keep_their_meaning():
    a, b, c, d = (Comparison(name, "=", 1.0) for name in "abcd")
    assert parse_where("a = 1 OR b = 1 OR c = 1") == Or(Or(a, b), c)
    assert parse_where("a = 1 AND b = 1 AND c = 1 AND d = 1") == And(And(a, b), And(c, d))
