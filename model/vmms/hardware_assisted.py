"""Hardware-assisted virtualization on the `vtx` profile.

The design VT-x and AMD-V made possible (the lecture's "hardware support"):
the guest, kernel and all, runs on the host processor in *guest mode*
(spec/vtx.py), where its mode, R, interrupt flag, page-table base and
timer are its own, so its sensitive instructions act on its own state and
need no VMM.  The VMM only:

1. builds, in its reserved host storage, a *nested page table* mapping
   each guest-physical page to the host frame of the guest's allocation
   (a page only partly inside guest storage is left unmapped), a *VMCS*,
   and a one-instruction host program, ``vmrun r1``;
2. chooses the *exit controls*: an instruction exits when, run in guest
   mode, it would change something VM entry and exit do not switch between
   guest and host: read off the spec (the instruction's effects against the
   slots the exit mechanism restores), which picks ``halt`` (the host's
   halt latch) and ``out`` (the host's port);
3. enters the guest (the host runs ``vmrun``) and, on each VM exit, reads
   the exit reason from the VMCS and finishes the guest step in software:
   an exiting instruction or a nested page fault is emulated on the virtual
   CPU (the spec's semantics: ``out`` goes to the guest's log, ``halt``
   halts the guest, an access beyond guest storage traps as on bare
   hardware); a guest trap that exited is delivered to the guest.

Guest traps and timer interrupts that do not exit are delivered inside the
guest by the hardware's own mechanism (the host hook only forwards them to
it), and count as direct steps.  A run that ends with the guest still in
guest mode forces an exit (like VT-x's preemption timer), so the guest's
state is always in the VMCS and the virtual CPU between runs.

Paging guests run on nested paging: the hardware walks the guest's table
and the nested one on every access, and the guest's page-table writes and
base loads cost the VMM nothing.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

from popek.model.machine import Machine
from popek.spec import vtx as V
from popek.spec.encoding import encode
from popek.spec.image import Image
from popek.spec.state import (
    BASE,
    BOUND,
    FLAGS,
    GUEST,
    HALTED,
    IE,
    MODE,
    PC,
    PEND,
    PSW_IE_BIT,
    PSW_MODE_BIT,
    PTBR,
    PTE_PRESENT,
    PTE_WRITE,
    SUPERVISOR,
    TIMER,
    Cause,
)
from popek.spec.trace import trace_trap
from popek.vmm import GuestRun, Support, cause_name

from .base import SoftwareVMM
from .sensitive import footprint

_SLOT_OF = {"pc": PC, "base": BASE, "bound": BOUND, "ptbr": PTBR, "timer": TIMER, "pend": PEND}


def exit_controls(profile) -> int:
    """The CTRL word: the exit-controlled instructions whose effects reach
    beyond what VM entry and exit switch (from the spec, not a list)."""
    arch = profile.arch
    switched = set(trace_trap(arch).field_writes)
    ctrl = 0
    for name, bit in V.EXIT_CONTROL.items():
        insn = profile.by_name.get(name)
        if insn is None:
            continue
        fp = footprint(insn, arch)
        if fp.output or fp.writes - switched:
            ctrl |= 1 << bit
    return ctrl


class HardwareAssistedVMM(SoftwareVMM):
    name: ClassVar[str] = "hardware-assisted"
    summary: ClassVar[str] = "guest runs in vtx guest mode; VM exits on halt/out; nested paging"
    supports: ClassVar[Mapping[str, Support]] = {
        "vtx": Support(True, True, "guest mode gives the guest its own sensitive state; only host-owned effects exit"),
    }

    NPT: ClassVar[int] = 0x400  # nested page table (host-physical)
    VMCS_AT: ClassVar[int] = 0x800
    ENTRY: ClassVar[int] = 0xC00  # the host program: vmrun r1

    def __init__(self, host: Machine):
        if not host.arch.vtx or "vmrun" not in host.profile.by_name:
            raise ValueError(
                f"hardware-assisted needs a vtx host; profile {host.profile.name!r} has no guest mode"
            )
        super().__init__(host)

    def load(self, image: Image, *, memsize: int) -> None:
        super().load(image, memsize=memsize)
        host, arch = self.host, self.host.arch
        pb = arch.page_bits
        for addr, word in zip((self.ENTRY, self.ENTRY + 1), encode(host.profile, host.profile["vmrun"], rs=1)):
            host.write(addr, word)
        pages = 1 << (arch.word - pb)
        mapped = memsize >> pb  # whole pages only
        for g in range(pages):
            entry = (self.layout.guest_offset + (g << pb)) | PTE_PRESENT | PTE_WRITE if g < mapped else 0
            host.write(self.NPT + g, entry)
        self.ctrl = exit_controls(host.profile)
        host.write(self.VMCS_AT + V.CTRL, self.ctrl)
        host.write(self.VMCS_AT + V.NPT, self.NPT)
        self._counts.extra["nested_entries"] = mapped

    def reserved(self) -> list[range]:
        return [range(self.NPT, self.ENTRY + 2)] if self.layout else []

    # -- running ---------------------------------------------------------------
    def run(self, steps: int) -> GuestRun:
        v = self._loaded()
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        done = 0
        while done < steps and not v.S[HALTED]:
            if v.S[GUEST]:  # the guest entered its own guest mode: interpret it
                self._counts.vmm_entries += 1
                n = self.emulate_step()
                if n == 0:
                    break
                done += n
                continue
            done += self._enter(steps - done)
        return GuestRun(done, bool(v.S[HALTED]))

    def _enter(self, budget: int) -> int:
        """One VM entry: run the guest in guest mode until an exit or ``budget``."""
        host, H, S = self.host, self.host.S, self.vcpu.S
        M, at = host.M, self.VMCS_AT + V.GUEST_AREA
        psw = S[FLAGS] | (S[IE] << PSW_IE_BIT) | (S[MODE] << PSW_MODE_BIT)
        for k, name in enumerate(V.SAVED):
            if name == "psw":
                value = psw
            elif name in _SLOT_OF:
                value = S[_SLOT_OF[name]]
            else:
                value = S[int(name[1:])]
            if M[at + k] != value:
                host.write(at + k, value)
        for slot in (MODE, BASE, BOUND, PTBR, IE, TIMER, PEND, HALTED, GUEST):
            H[slot] = 0
        H[MODE] = SUPERVISOR
        H[BOUND] = host.memsize
        H[PC] = self.ENTRY
        H[1] = self.VMCS_AT
        host.flush()
        self._exited = False
        r = host.run(budget + 1, self._on_trap)
        guest_steps = r.steps - 1  # the host's vmrun
        if host.S[GUEST]:  # out of budget inside the guest: a preemption exit
            host.trap(Cause.VMEXIT, 0)
            self._counts.extra["preemptions"] += 1
            exited = False
        else:
            exited = True
            guest_steps -= 1  # the exit itself; the VMM completes that guest step
        self._read_guest()
        self._counts.direct += guest_steps
        if not exited:
            return guest_steps
        reason, qual = M[self.VMCS_AT + V.REASON], M[self.VMCS_AT + V.QUAL]
        c = self._counts
        c.vmm_entries += 1
        c.traps[cause_name(reason)] += 1
        c.extra[f"vm_exits.{self._exit_name(reason, qual)}"] += 1
        if reason in (Cause.VMEXIT, Cause.NPF):
            if reason == Cause.NPF:
                c.extra["nested_faults"] += 1
            return guest_steps + self.emulate_step()
        self.reflect(reason, qual)
        return guest_steps + 1

    def _exit_name(self, reason: int, qual: int) -> str:
        """An instruction exit by the instruction's name; others by cause."""
        insn = self.host.profile.by_opcode.get(qual) if reason == Cause.VMEXIT else None
        return insn.name if insn is not None else cause_name(reason)

    def _on_trap(self, host: Machine, cause: int, info: int) -> bool:
        """The host hook: in guest mode, the hardware's trap mechanism decides
        (deliver inside the guest, or exit); it is only forwarded here."""
        if not host.S[GUEST]:
            raise RuntimeError(f"{self.name}: the host program trapped ({cause_name(cause)})")
        host.trap(cause, info)
        if host.S[GUEST]:
            self._counts.extra["delivered_in_guest"] += 1
            return False
        return True

    def _read_guest(self) -> None:
        """The guest state the exit saved in the VMCS, into the virtual CPU."""
        S, M, at = self.vcpu.S, self.host.M, self.VMCS_AT + V.GUEST_AREA
        for k, name in enumerate(V.SAVED):
            value = M[at + k]
            if name == "psw":
                S[FLAGS] = value & 0xF
                S[IE] = (value >> PSW_IE_BIT) & 1
                S[MODE] = (value >> PSW_MODE_BIT) & 1
            elif name in _SLOT_OF:
                S[_SLOT_OF[name]] = value
            else:
                S[int(name[1:])] = value
        self._vcpu_stale = True
