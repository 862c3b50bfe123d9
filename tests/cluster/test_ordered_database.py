"""The example database hands its entries to Hypothesis in one order,
whatever order the store keeps them in (a Redis set's changes as the
server rehashes it): Hypothesis samples what it fetches with the run's
seeded random, so the order decides which entries a seed replays."""

from __future__ import annotations

import random

from hypothesis.database import InMemoryExampleDatabase

from popek.fuzz.example_db import make_database, ordered_database


class Shuffling(InMemoryExampleDatabase):
    """A store that returns its entries in a new order on every fetch."""

    def fetch(self, key):
        entries = list(super().fetch(key))
        random.shuffle(entries)
        return iter(entries)


def test_fetch_is_sorted_whatever_the_store_does():
    inner = Shuffling()
    db = ordered_database(inner)
    values = [bytes([i, 255 - i]) for i in range(40)]
    for v in values:
        db.save(b"k", v)
    assert [list(db.fetch(b"k")) for _ in range(5)] == [sorted(values)] * 5
    db.move(b"k", b"other", values[0])
    db.delete(b"k", values[1])
    assert list(db.fetch(b"k")) == sorted(values[2:])
    assert list(db.fetch(b"other")) == [values[0]]


def test_campaign_databases_are_ordered(tmp_path):
    db = make_database(str(tmp_path / "examples"))
    for v in (b"c", b"a", b"b"):
        db.save(b"k", v)
    assert list(db.fetch(b"k")) == [b"a", b"b", b"c"]
