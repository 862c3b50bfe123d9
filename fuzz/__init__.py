"""popek's fuzzing harness: guests from the spec, the Popek-Goldberg
requirements as properties, campaigns across processes and machines.

For a VMM author's own test suite (plain ``pytest -n auto``)::

    from hypothesis import given
    from popek.fuzz import from_profile, assert_all

    @given(from_profile("pg"))
    def test_my_vmm(case):
        assert_all(MyVMM, case)

See docs/fuzzing.md.  The modules, in the order data flows through them:
`families` (instruction groups read off the spec), `guest` (a generated
guest and its layout), `strategies`, `execute` (bare and VMM runs, safety
watches), `properties`, `report` and `findings` (counterexamples),
`minimize`, `isa_coverage`; ``popek fuzz``'s campaigns: `campaign_config`,
`campaign` (the parent process), `worker` and `worker_loop` (a worker),
`worker_status`, `worker_findings`, `example_db`, `campaign_report`;
`stateful`, `verdict` (``popek verify``).
"""

from .guest import GuestCase, Op
from .properties import (
    Outcome,
    PropertyFailed,
    assert_all,
    assert_efficient,
    assert_equivalent,
    assert_faithful,
    assert_safe,
    check,
    first_divergence,
)
from .stateful import vmm_state_machine
from .strategies import from_profile

__all__ = [
    "GuestCase",
    "Op",
    "Outcome",
    "PropertyFailed",
    "assert_all",
    "assert_efficient",
    "assert_equivalent",
    "assert_faithful",
    "assert_safe",
    "check",
    "first_divergence",
    "from_profile",
    "vmm_state_machine",
]
