"""The toy's own tests, as a plug-in author would write them."""

from popek.conformance import check_vmm
from toy_vmm.vmm import ToyVMM


def test_toy_meets_the_popek_contract() -> None:
    check_vmm(ToyVMM)


# run(n) interleaved with the toy's snapshots (in memory and through files),
# suspend/resume and migrations, against the bare machine (popek.vmm.Lifecycle)
from popek.fuzz.stateful import vmm_state_machine  # noqa: E402

TestToyLifecycle = vmm_state_machine(ToyVMM, "pg").TestCase
