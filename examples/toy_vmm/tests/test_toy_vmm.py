"""The toy's own tests, as a plug-in author would write them."""

from popek.conformance import check_vmm
from toy_vmm.vmm import ToyVMM


def test_toy_meets_the_popek_contract() -> None:
    check_vmm(ToyVMM)
