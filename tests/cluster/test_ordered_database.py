"""The example database hands its entries to Hypothesis in one order,
whatever order the store keeps them in (a Redis set's changes as the
server rehashes it): Hypothesis samples what it fetches with the run's
seeded random, so the order decides which entries a seed replays."""

from __future__ import annotations

import random

from hypothesis.database import InMemoryExampleDatabase

from popek.fuzz.example_db import campaign_view, make_database, ordered_database


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


def test_a_worker_does_not_replay_what_another_worker_of_its_campaign_saved():
    """Which of a fresh finding's shrinking steps another worker would see
    depends on the machine's load; what the campaign found before it began,
    and what later campaigns see, is everyone's."""
    inner = InMemoryExampleDatabase()
    inner.save(b"k", b"old")
    w0, w1 = (campaign_view(ordered_database(inner), "c1", f"0.{i}") for i in (0, 1))
    w0.save(b"k", b"found-by-w0")
    w1.save(b"k", b"old")  # saved again: stays everyone's
    w1.save(b"k", b"found-by-w1")
    assert list(w0.fetch(b"k")) == [b"found-by-w0", b"old"]
    assert list(w1.fetch(b"k")) == [b"found-by-w1", b"old"]
    later = campaign_view(ordered_database(inner), "c2", "0.0")
    assert list(later.fetch(b"k")) == [b"found-by-w0", b"found-by-w1", b"old"]
    w0.move(b"k", b"secondary", b"found-by-w0")  # Hypothesis downgrading a shrunk-away example
    assert list(w0.fetch(b"secondary")) == [b"found-by-w0"] and list(w1.fetch(b"secondary")) == []
    assert b"found-by-w0" not in list(later.fetch(b"k"))
    w1.save(b"k", b"found-by-w0")  # the same entry found by both: each sees its own
    assert b"found-by-w0" in list(w1.fetch(b"k"))
