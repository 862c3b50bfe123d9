"""The example database: where a campaign's findings come back from.

Hypothesis saves every failing example in its example database and replays
the database first on every run, so a campaign replays what its earlier
runs and other machines sharing one Redis server found.  A campaign lives on
that database, so it is checked before the first case (`check_database`: a
``--db`` the user named is used or refused with one line, never replaced by
a local directory nobody else shares), read defensively (a damaged entry is
skipped and counted, not fed to Hypothesis), and handed over in sorted order
(`ordered_database`), so the same seed replays the same entries from any
database.

Within one campaign each worker sees the database as the campaign found it,
plus what it saved itself (`campaign_view`).  Every save reaches the shared
database at once (a killed campaign loses nothing); but a worker that
replayed another worker's fresh finding would draw its cases from whichever
of that finding's shrinking steps had been saved when its next batch began,
which depends on the machine's load, and a seed with a case budget must
give the same cases and the same counterexamples on any machine.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypothesis import settings
    from hypothesis.database import ExampleDatabase

SETTINGS_PROFILE = "popek-campaign"  # the Hypothesis settings profile a campaign runs under
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_CONNECT_TIMEOUT = 3.0  # seconds: a black-holed address fails fast
MAX_DB_ENTRY = 1 << 20  # bytes; Hypothesis's entries are choice sequences of a few kB
DEFAULT_DB = str(Path(".popek") / "examples")


class DatabaseError(ValueError):
    """An example database popek cannot use: one line saying which and why."""


def is_redis(spec: str | None) -> bool:
    """Is ``spec`` a Redis server's address rather than a directory?"""
    return bool(spec) and spec.startswith(REDIS_SCHEMES)


def _redis_client(spec: str):
    """A Redis client for ``spec`` that has answered a PING, or
    `DatabaseError`.  A ``--db`` the user named is what they asked for: a
    server that does not answer stops the campaign (exit 2) rather than
    falling back to a local directory that other machines do not share."""
    try:
        import redis
    except ImportError:
        raise DatabaseError(f"--db {spec}: a Redis database needs the redis client library, "
                            f"which is not installed: pip install 'popek[redis]'") from None
    try:
        client = redis.Redis.from_url(
            spec, socket_connect_timeout=REDIS_CONNECT_TIMEOUT, socket_timeout=REDIS_CONNECT_TIMEOUT,
        )  # fmt: skip
        client.ping()
    except Exception as e:  # connection refused, bad port or host, TLS, a server that is not Redis
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatabaseError(f"--db {spec}: no Redis server answers there: {reason[:200]}") from None
    return client


def check_database(spec: str | None) -> None:
    """Before the first case: a Redis database answers, a directory database
    is a directory popek can write (created if missing)."""
    if is_redis(spec):
        _redis_client(spec).close()
        return
    check_directory(
        Path(spec or DEFAULT_DB), "--db",
        not_dir="not a directory (an example database is a directory or redis://HOST:PORT)",
        cannot="cannot write the example database there",
    )  # fmt: skip


def check_directory(path: Path, name: str, *, not_dir: str = "not a directory",
                    cannot: str = "cannot write there") -> None:  # fmt: skip
    """``path`` is a directory popek can write (created if missing), or a
    `DatabaseError` naming it (``name``) and saying why.  Tried by creating
    and removing a file: permission bits say yes to root on a read-only
    file system.  The findings directory is checked this way too."""
    if path.exists() and not path.is_dir():
        raise DatabaseError(f"{name} {path}: {not_dir}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".popek-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DatabaseError(f"{name} {path}: {cannot}: {e.strerror or e}") from None


class _Skips:
    """What a checked store skipped: a count, and the first few named."""

    def __init__(self) -> None:
        self.skipped = 0
        self.warnings: list[str] = []

    def skip(self, where: str, why: Exception) -> None:
        self.skipped += 1
        if len(self.warnings) < 5:
            self.warnings.append(f"example database entry {where} skipped: {why}")


def _checked_directory_database(path: str):
    """Hypothesis's directory database, reading only what it could have
    written: an entry that is not a regular file (a FIFO would block the
    campaign), is larger than `MAX_DB_ENTRY`, or does not decode as a choice
    sequence is skipped, counted in ``skipped`` and named in ``warnings``."""
    from hypothesis.database import DirectoryBasedExampleDatabase

    class CheckedDirectoryDatabase(DirectoryBasedExampleDatabase, _Skips):
        def __init__(self, path: str):
            DirectoryBasedExampleDatabase.__init__(self, path)
            _Skips.__init__(self)

        def fetch(self, key: bytes):
            # where Hypothesis keeps ``key`` (its own `_key_path`, not ours to call)
            kp = self.path / hashlib.sha384(key).hexdigest()[:16]
            try:
                names = os.listdir(kp) if kp.is_dir() else []
            except OSError:
                return
            for name in names:
                entry = kp / name
                try:
                    info = os.lstat(entry)
                    if not stat.S_ISREG(info.st_mode):
                        raise ValueError("not a regular file")
                    if info.st_size > MAX_DB_ENTRY:
                        raise ValueError(f"{info.st_size} bytes, more than {MAX_DB_ENTRY}")
                    with open(entry, "rb") as f:
                        data = f.read(MAX_DB_ENTRY + 1)
                    _check_entry(data)
                except FileNotFoundError:
                    continue  # deleted meanwhile (another worker shrank it)
                except (OSError, ValueError) as e:
                    self.skip(str(entry), e)
                    continue
                yield data

    return CheckedDirectoryDatabase(path)


def _check_entry(data: object) -> None:
    """Raise ValueError unless ``data`` is an entry Hypothesis could have
    written: bytes, at most `MAX_DB_ENTRY` of them, a choice sequence."""
    from hypothesis.database import choices_from_bytes

    if not isinstance(data, bytes):
        raise ValueError(f"a {type(data).__name__}, not bytes")
    if len(data) > MAX_DB_ENTRY:
        raise ValueError(f"{len(data)} bytes, more than {MAX_DB_ENTRY}")
    if choices_from_bytes(data) is None:
        raise ValueError("not an entry Hypothesis wrote")


def _checked_redis_database(client):
    """Hypothesis's Redis database, reading only what it could have written:
    anyone who reaches the server can store anything under its keys, and
    Hypothesis would be fed it; such an entry is skipped, counted in
    ``skipped`` and named in ``warnings``, as a damaged file is."""
    from hypothesis.extra.redis import RedisExampleDatabase

    class CheckedRedisDatabase(RedisExampleDatabase, _Skips):
        def __init__(self, client):
            RedisExampleDatabase.__init__(self, client, key_prefix=b"popek-example:")
            _Skips.__init__(self)

        def fetch(self, key: bytes):
            for data in super().fetch(key):
                try:
                    _check_entry(data)
                except ValueError as e:
                    self.skip(f"under {key[:40]!r}", e)
                    continue
                yield data

    return CheckedRedisDatabase(client)


def make_database(spec: str | None) -> ExampleDatabase:
    """A Hypothesis example database for ``--db`` (`check_database` first:
    a `DatabaseError` for one popek cannot use)."""
    check_database(spec)
    if is_redis(spec):
        return ordered_database(_checked_redis_database(_redis_client(spec)))
    return ordered_database(_checked_directory_database(spec or DEFAULT_DB))


def ordered_database(inner: ExampleDatabase) -> ExampleDatabase:
    """``inner`` whose ``fetch`` gives its entries sorted.

    Hypothesis replays a sample of the entries it fetches, drawn with the
    run's seeded random, so the sample depends on the order they come in: a
    Redis set's order changes as the server rehashes it, a directory's with
    the file system.  Sorted, the same seed replays the same entries from
    any database, so a campaign on Redis (a cluster's) draws the same cases
    as one on a local directory."""
    from hypothesis.database import ExampleDatabase

    class Ordered(ExampleDatabase):
        def fetch(self, key: bytes):
            return iter(sorted(inner.fetch(key)))

        def save(self, key: bytes, value: bytes) -> None:
            inner.save(key, value)

        def delete(self, key: bytes, value: bytes) -> None:
            inner.delete(key, value)

        def move(self, src: bytes, dest: bytes, value: bytes) -> None:
            inner.move(src, dest, value)

        def __repr__(self) -> str:
            return f"ordered({inner!r})"

        wrapped = property(lambda self: inner)  # the database whose entries these are
        skipped = property(lambda self: getattr(inner, "skipped", 0))  # corrupt entries seen
        warnings = property(lambda self: getattr(inner, "warnings", []))

    return Ordered()


def campaign_view(inner: ExampleDatabase, campaign: str, worker: str) -> ExampleDatabase:
    """``inner`` as one worker of campaign ``campaign`` sees it: without the
    entries the campaign's other workers saved (see the module's docstring).

    Each save of a new entry is first recorded under a key of the
    campaign's own (a digest of the entry, not a copy), then made; a fetch
    leaves out what that record names and this worker did not save.  An
    entry that was there before the campaign stays visible to every worker
    whoever saves it again.  (Deletions are Hypothesis's housekeeping and
    go through: they remove only entries that no longer fail, so with an
    unchanged VMM they touch nothing another worker replays.)"""
    from hypothesis.database import ExampleDatabase, choices_to_bytes

    def written(key: bytes) -> bytes:
        return b"popek-campaign-saves:" + campaign.encode() + b":" + key

    def digest(value: bytes) -> bytes:
        # stored as a choice sequence of one, so every store's checks take it
        return choices_to_bytes((hashlib.blake2b(value, digest_size=16).digest(),))

    own: dict[bytes, set[bytes]] = {}

    class CampaignView(ExampleDatabase):
        def fetch(self, key: bytes):
            entries = list(inner.fetch(key))
            theirs = set(inner.fetch(written(key))) - {digest(v) for v in own.get(key, ())}
            return iter([v for v in entries if digest(v) not in theirs])

        def save(self, key: bytes, value: bytes) -> None:
            if value not in set(inner.fetch(key)):  # new: the campaign's (an old entry stays everyone's)
                inner.save(written(key), digest(value))  # recorded before it can be fetched
            own.setdefault(key, set()).add(value)
            inner.save(key, value)

        def delete(self, key: bytes, value: bytes) -> None:
            own.get(key, set()).discard(value)
            inner.delete(key, value)

        def move(self, src: bytes, dest: bytes, value: bytes) -> None:
            if value in own.get(src, ()):
                self.save(dest, value)
                self.delete(src, value)
            else:
                inner.move(src, dest, value)

        def __repr__(self) -> str:
            return f"campaign_view({inner!r}, {campaign!r}, {worker!r})"

        wrapped = property(lambda self: getattr(inner, "wrapped", inner))
        skipped = property(lambda self: getattr(inner, "skipped", 0))
        warnings = property(lambda self: getattr(inner, "warnings", []))

    return CampaignView()


def register_settings_profile(database: ExampleDatabase, batch: int, reuse_only: bool = False) -> settings:
    """The ``popek-campaign`` settings profile (Hypothesis's ``ci`` profile
    turns the database off; a campaign lives on it)."""
    from hypothesis import HealthCheck, Phase, settings

    phases = [Phase.reuse] if reuse_only else [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]
    settings.register_profile(
        SETTINGS_PROFILE,
        database=database,
        max_examples=batch,
        deadline=None,
        derandomize=False,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    return settings.get_profile(SETTINGS_PROFILE)
