"""`--cluster`'s user errors: one line each, exit 2, before any campaign runs."""

from __future__ import annotations

import sys

import pytest

from popek.cli import main

FUZZ = ["fuzz", "--vmm", "trap-and-emulate", "--profile", "pg", "--cases", "10"]


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popek: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", [FUZZ, ["verify", "--designs", "trap-and-emulate", "--profiles", "pg",
                                             "--no-proofs", "--cases", "10"]])  # fmt: skip
def test_without_the_extra_the_error_names_the_install(capsys, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError, as when absent
    line = _one_line_error(capsys, [*command, "--cluster", "tcp://127.0.0.1:8786", "--db", "redis://127.0.0.1:1/0"])
    assert "pip install 'popek[cluster]'" in line


@pytest.mark.parametrize("extra, says", [
    ([], "--cluster needs an example database every worker reaches"),
    (["--db", "some/dir"], "a directory is not shared by a cluster's workers"),
    (["--db", "redis://127.0.0.1:1/0", "--cluster-private-db"], "give one"),
    (["--db", "redis://127.0.0.1:1/0"], "cannot reach Redis"),
])  # fmt: skip
def test_the_example_database_must_be_shared_or_declined(capsys, extra, says):
    assert says in _one_line_error(capsys, [*FUZZ, "--cluster", "tcp://127.0.0.1:8786", *extra])


@pytest.mark.parametrize("address, says", [
    ("garbage:::", "not a scheduler address"),
    ("tcp://127.0.0.1", "not a scheduler address"),
    ("tcp://127.0.0.1:1", "cannot reach the Dask scheduler"),
])  # fmt: skip
def test_a_bad_scheduler_address_is_one_line(capsys, address, says):
    assert says in _one_line_error(capsys, [*FUZZ, "--cluster", address, "--cluster-private-db"])


def test_the_opt_out_goes_with_cluster(capsys):
    assert "--cluster-private-db goes with --cluster" in _one_line_error(capsys, [*FUZZ, "--cluster-private-db"])


def test_a_port_that_is_not_a_scheduler_is_one_line(capsys, monkeypatch):
    """A web server (say the dashboard, 8787) accepts the connection but never
    speaks first; Dask's client would wait on it for ever."""
    import socket
    import threading

    import popek.cluster

    monkeypatch.setattr(popek.cluster, "PROBE_TIMEOUT", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
        line = _one_line_error(capsys, [*FUZZ, "--cluster", f"tcp://127.0.0.1:{port}", "--cluster-private-db"])
        for conn in accepted:
            conn.close()
    assert "not a Dask scheduler" in line and "8786" in line
