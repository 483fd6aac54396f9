"""Hungarian alphabetical order: the pure comparison, and the same order from both databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from billingo_pipeline.warehouse.collation import COLLATION_NAME, compare_hungarian, hungarian_sort_key

NAMES_IN_ORDER = [
    "Ádám", "Cukor", "Csányi", "Dobos", "Dzurilla", "Dzsudzsák", "Gál", "Gyula", "Kárpát", "kiss", "Kiss",
    "Lukács", "Lyka", "Nagy", "Nyitrai", "Olajos", "Óra", "Ödön", "Őrség", "Sándor", "Sóskúti", "Steiner",
    "Szabó", "Tóth", "Tyukod", "Ujj", "Úr", "Üveg", "Zala", "Zúzmara", "Zsolnay",
]


def _shuffled(names: list[str]) -> list[str]:
    return names[1::2][::-1] + names[::2]


def test_hungarian_order():
    assert sorted(_shuffled(NAMES_IN_ORDER), key=hungarian_sort_key) == NAMES_IN_ORDER


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("Kárpát", "Kiss"),  # á is an a: only breaks ties
        ("Sóskúti", "Steiner"),
        ("Cukor", "Csányi"),  # cs is one letter, after c
        ("Zala", "Zsolnay"),
        ("Olajos", "Ödön"),  # ö is a letter of its own, after o
        ("Ádám", "Adél"),  # a long vowel only breaks a tie
        ("Adam", "Ádám"),  # short first
        ("Ödön", "Őz"),
        ("kiss", "Kiss"),  # case last, lower first
        ("Kossuth", "Kosz"),  # "ss" is not a digraph
        ("hosszú", "hoszzú"),  # ssz = sz + sz, and sz sorts before z
        ("Alfa Kft.", "Alfabet"),  # space before letters
    ],
)
def test_pairs(before, after):
    assert compare_hungarian(before, after) == -1
    assert compare_hungarian(after, before) == 1


def test_only_identical_strings_are_equal():
    assert compare_hungarian("Kiss", "Kiss") == 0
    assert compare_hungarian("Kiss", "KISS") != 0


def test_both_databases_sort_partner_names_the_same_way(engine):
    # Bound parameters, not literals: the names travel as the driver sends a partner name.
    names = sa.union_all(
        *(sa.select(sa.cast(sa.bindparam(f"n{i}", n), sa.String).label("name")) for i, n in enumerate(_shuffled(NAMES_IN_ORDER)))
    ).subquery("names")
    query = sa.select(names.c.name).order_by(names.c.name.collate(COLLATION_NAME))
    with engine.connect() as conn:
        assert list(conn.scalars(query)) == NAMES_IN_ORDER
