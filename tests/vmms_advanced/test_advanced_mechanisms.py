"""The mechanisms inside the advanced designs, each shown by its counters or
its refusals: a test here fails if a design stops doing what its docstring
says, even where the guest's final state would still come out right."""

from __future__ import annotations

import pytest

from popek.cli import main
from popek.model.machine import Machine
from popek.model.vmms.hardware_assisted import HardwareAssistedVMM, exit_controls
from popek.model.vmms.paravirt import HYPERCALL, RewriteError, rewrite
from popek.model.analysis.may_be_sensitive import needs_vmm
from popek.spec import vtx as V
from popek.spec.asm import assemble
from popek.spec.image import Image
from popek.spec.profiles import get

from advanced_guests import MEMSIZE, image, run_bare, vmm_for


# -- paravirtualization -----------------------------------------------------------
def test_the_pass_rewrites_exactly_the_instructions_that_need_the_vmm() -> None:
    p = get("x86")
    img = image("pushf", "x86")
    out = rewrite(img, p, 4096)
    for addr in sorted(img.code):
        w0 = out.image.words[addr]
        original = p.by_opcode[img.words[addr] >> 8]
        assert (w0 == HYPERCALL) == needs_vmm(original, p.arch), (hex(addr), original.name)
    assert out.sites and len(out.calls) == len(out.sites)


@pytest.mark.parametrize(
    "text, code, message",
    [
        ("start: li r1, 1\n out r1\n halt\n", None, "no code map"),
        ("start: ld r1, here(r0)\nhere: out r1\n halt\n", (), "reads its own instructions"),
        ("start: li r2, here\n ld r1, 1(r2)\nhere: out r1\n halt\n", (), "reads its own instructions"),
        ("start: li sp, here\n pop r1\nhere: out r1\n halt\n", (), "reads its own instructions"),
        ("start: jmp data\n halt\ndata: .word 0x3300, 0\n", (), "the pass saw no such instruction"),
        ("start: li r1, 0x3300\n st r1, new(r0)\n jmp new\nnew: nop\n halt\n", (),
         "the pass saw no such instruction"),
        ("start: jmp here+1\nhere: out r1\n halt\n", (), "without starting where it starts"),
    ],
    ids=["no-code-map", "reads-its-code", "computed-address", "stack-in-code", "sensitive-data-run",
         "sensitive-made-at-run-time", "runs-half-a-hypercall"],
)
def test_the_pass_refuses_what_it_cannot_rewrite_safely(text: str, code, message: str) -> None:
    p = get("x86")
    img = assemble(text, p)
    if code is None:
        img = Image(img.words, img.entry)
    with pytest.raises(RewriteError, match=message):
        rewrite(img, p, 4096)


def test_the_guest_never_sees_its_hypercalls() -> None:
    vmm = vmm_for("paravirt", image("pushf", "x86"), "x86")
    alloc = vmm.allocation()
    host_words = vmm.host.M[alloc.start : alloc.stop]
    assert HYPERCALL in host_words  # the rewritten code is what runs
    assert HYPERCALL not in vmm.guest_state().memory  # the guest sees its own
    bare, steps, _ = run_bare(image("pushf", "x86"), "x86")
    vmm.run(steps)
    assert vmm.counters().extra["hypercalls"] > 0
    assert vmm.guest_state().differences(bare) == []


def test_a_hypercall_the_guest_overwrites_becomes_what_it_wrote() -> None:
    """The kernel overwrites the first word of its own `out r1` (rewritten)
    with the first word of `out r2`: bare hardware then runs `out r2`."""
    text = """
start:  li   r1, 1
        li   r2, 2
        li   r3, 0x3b02             ; the first word of `out r2`
        st   r3, site(r0)
site:   out  r1
        halt
"""
    p = get("x86")
    img = assemble(text, p)
    bare, steps, _ = run_bare(img, "x86")
    vmm = vmm_for("paravirt", img, "x86")
    vmm.run(steps)
    assert bare.out == (2,)
    assert vmm.guest_state().differences(bare) == []
    assert vmm.counters().extra["rewritten_at_run_time"] == 1


def test_a_store_of_the_value_a_hypercall_word_holds_still_overwrites_it() -> None:
    """Found by fuzzing paravirt on vtx: a kernel's stack grew into the
    second word of a rewritten `rti` and pushed there the very number that
    word held as the hypercall's index.  The VMM compared values, took the
    hypercall for untouched, and showed the guest its original word."""
    p = get("x86")

    def program(value: int) -> str:
        return f"""
start:  li   r1, 1
        out  r1                     ; two rewritten instructions first, so
        out  r1                     ; that `site` is hypercall 2, not 0
        li   r3, {value}
        st   r3, site+1(r0)         ; the second word of `out r1`
site:   out  r1
        halt
"""

    probe = assemble(program(0), p)
    site = probe.symbols["site"]
    k = sorted(rewrite(probe, p, MEMSIZE).sites).index(site)
    assert k != probe.words.get(site + 1, 0)  # the store changes the original word
    img = assemble(program(k), p)  # same layout: the store writes k, the index
    vmm = vmm_for("paravirt", img, "x86")
    assert (vmm.host.M[vmm.allocation().start + site + 1]) == k  # the hypercall's word
    bare, steps, _ = run_bare(img, "x86")
    vmm.run(steps)
    assert vmm.guest_state().differences(bare) == []


# -- binary translation -------------------------------------------------------------
def test_translations_are_reused_and_invalidated_by_self_modifying_code() -> None:
    img = image("smc_patch", "x86")
    bare, steps, _ = run_bare(img, "x86")
    vmm = vmm_for("binary-translation", img, "x86")
    vmm.run(steps)
    x = vmm.counters().extra
    assert vmm.guest_state().differences(bare) == []
    assert x["translations_invalidated"] > 0  # the patched block was dropped
    assert x["callouts"] >= 5  # four outs and the halt called the VMM


def test_hot_kernel_loops_run_from_the_translation_cache() -> None:
    text = "start: li r1, 500\nloop: addi r2, 3\n xor r3, r2\n addi r1, -1\n jnz loop\n out r3\n halt\n"
    img = assemble(text, get("x86"))
    bare, steps, _ = run_bare(img, "x86")
    vmm = vmm_for("binary-translation", img, "x86")
    vmm.run(steps)
    c = vmm.counters()
    assert vmm.guest_state().differences(bare) == []
    assert c.extra["translations"] <= 4
    assert c.extra["translated_steps"] >= 2000  # the loop never left translated code
    assert c.efficiency > 0.99


def test_user_code_runs_directly_and_kernel_code_is_translated() -> None:
    img = image("syscall", "x86")
    _, steps, _ = run_bare(img, "x86")
    vmm = vmm_for("binary-translation", img, "x86")
    vmm.run(steps)
    c = vmm.counters()
    assert 0 < c.extra["translated_steps"] < c.direct  # some direct steps were user code


# -- shadow paging ------------------------------------------------------------------
@pytest.mark.parametrize("design", ["binary-translation", "paravirt"])
def test_shadow_tables_follow_page_table_writes(design: str) -> None:
    img = image("pt_heavy", "x86")
    bare, steps, _ = run_bare(img, "x86")
    vmm = vmm_for(design, img, "x86")
    vmm.run(steps)
    x = vmm.counters().extra
    assert vmm.guest_state().differences(bare) == []
    assert x["shadow_updates"] >= 8  # one per remap of page 15
    assert x["shadow_faults"] > 0


# -- hardware assistance ------------------------------------------------------------
def test_exit_controls_are_the_instructions_with_host_owned_effects() -> None:
    assert exit_controls(get("vtx")) == (1 << V.X_HALT) | (1 << V.X_OUT)


def test_hardware_assisted_needs_a_vtx_host() -> None:
    with pytest.raises(ValueError, match="needs a vtx host"):
        HardwareAssistedVMM(Machine(get("x86"), 1 << 16))


def test_nested_paging_costs_no_exit_on_page_table_writes() -> None:
    img = image("pt_heavy", "vtx")
    bare, steps, _ = run_bare(img, "vtx")
    vmm = vmm_for("hardware-assisted", img, "vtx")
    vmm.run(steps)
    c = vmm.counters()
    assert vmm.guest_state().differences(bare) == []
    assert dict((k, v) for k, v in c.extra.items() if k.startswith("vm_exits.")) == {
        "vm_exits.out": 2,
        "vm_exits.halt": 1,
    }
    assert c.efficiency > 0.99


def test_shadow_variant_of_hardware_assistance_exits_on_traps_and_table_loads() -> None:
    img = image("pt_heavy", "vtx")
    bare, steps, _ = run_bare(img, "vtx")
    vmm = vmm_for("hardware-assisted+shadow", img, "vtx")
    vmm.run(steps)
    x = vmm.counters().extra
    assert vmm.guest_state().differences(bare) == []
    assert x["vm_exits.lptb"] == 2 and x["shadow_updates"] >= 8
    assert "nested_entries" not in x


def test_popek_list_shows_all_six_designs(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("emulator", "trap-and-emulate", "hybrid", "binary-translation", "paravirt", "hardware-assisted"):
        assert f"{name}  (built-in" in out


# -- the footprint against the Z3 classification --------------------------------------
@pytest.mark.parametrize("profile", ["pg", "hybrid", "x86", "vtx"])
def test_every_instruction_z3_finds_sensitive_needs_the_vmm(profile: str) -> None:
    """`may_be_sensitive.needs_vmm` is the fast, conservative test the designs use;
    it must catch everything the proofs find sensitive (it may catch more)."""
    from popek.proofs.classify import YES, classify_profile

    p = get(profile)
    proved = {c.insn for c in classify_profile(p) if c.answer("sensitive") == YES}
    caught = {i.name for i in p.insns if needs_vmm(i, p.arch)}
    assert proved, "the classification found nothing sensitive"
    assert proved <= caught, sorted(proved - caught)


@pytest.mark.parametrize("design", ["paravirt", "binary-translation", "hardware-assisted+shadow"])
def test_one_step_slices_over_two_shadow_faults_make_progress(design: str) -> None:
    """`ld` right after reset needs two shadow entries (its code page, then its
    operand's page), each filled by a direct run that ends with no guest step;
    found by fuzzing paravirt in slices of one step ("no progress")."""
    text = "start: ld r0, 0x200(r0)\n li r1, 7\n halt\n"
    profile = "vtx" if design == "hardware-assisted+shadow" else "x86"
    img = assemble(text, get(profile))
    bare, steps, _ = run_bare(img, profile)
    vmm = vmm_for(design, img, profile)
    done = sum(vmm.run(1).steps for _ in range(steps))
    assert done == steps
    assert vmm.guest_state().differences(bare) == []
