; A trap-and-emulate monitor written in popek assembly: P&G's VMM, run as
; an ordinary guest kernel, so that it can itself be run under a VMM
; (Theorem 2, recursive virtualization).  `popek nest` loads it with a guest
; of its own (the *inner* guest) placed at `inner`, sets `isize` to that
; guest's storage size and `ientry` to its entry point, and runs it.
;
;      +---------------------------+   monitor storage (its "physical" words)
;      | 0..11  trap words         |   the monitor's own old/new PSW
;      | code, vcpu, stack         |   this file
;      | scratch  (0x1008 words)   |   where the trap entry parks two registers
;      | inner .. inner+isize-1    |   the inner guest's "physical" storage
;      +---------------------------+
;
;   inner guest  --runs directly, real USER mode, R = (inner+vbase, clipped)-->
;      | privileged instruction, memory fault, sys, illegal word
;      v  (the machine's trap: old PSW to 0..5, new PSW = `trap` below)
;   monitor:  save the guest's registers into `vcpu` (its virtual CPU)
;      |-- PRIVILEGED and the guest is in virtual supervisor mode:
;      |      decode the trapped word and EMULATE it on `vcpu`
;      `-- anything else: REFLECT it, i.e. do what the trap mechanism does,
;             on the guest's own 0..5 and 8..11
;      then ENTER: compose the real R from the virtual one, put the
;      guest's registers back and `rti` to it in real user mode.
;
; The virtual CPU keeps the guest's registers, pc, flags, interrupt enable,
; mode and R (the fields popek compares, in its order).  While the guest
; runs, its registers, pc and flags are the machine's own; the rest lives
; only here.  The monitor is faithful exactly where every sensitive
; instruction traps (profile pg); on x86, pushf/popf/rdmode/rdbase/rdbound
; run directly in real user mode and show the real machine, not `vcpu`.
;
; Not virtualized (the monitor halts with `refused` = 1): a guest that arms
; the timer or turns paging on.  The timer cannot be: this machine has no
; instruction that reads the remaining count, and the monitor's own
; instructions would count down a guest's timer (P&G's VMM is one "without
; timing dependencies").  Paging would need shadow tables.
;
; The hard part is the first one: at a trap no register holds anything the
; monitor may overwrite, and the only way to store without one is relative
; to sp, which the guest chose.  So the entry first compares sp (flags are
; free: the trap saved the guest's in the old PSW) to find which 4K-word
; stretch it lies in, adds a constant that moves it into `scratch`, pushes
; r1 there and keeps the constant in r1; `saved` undoes it.

        .org 0x10
start:  li   r0, 0              ; r0 = 0 throughout: imm(r0) is word imm
        li   r1, 0x20           ; the monitor's new PSW: supervisor, interrupts off
        st   r1, 8(r0)
        li   r1, trap
        st   r1, 9(r0)
        st   r0, 10(r0)         ; R = (0, 0xffff): all of the monitor's storage
        li   r1, 0xffff
        st   r1, 11(r0)
        li   r1, 1              ; reset the virtual CPU as the machine resets:
        st   r1, vmode(r0)      ;   supervisor mode,
        ld   r1, isize(r0)
        st   r1, vbound(r0)     ;   R = (0, isize),
        ld   r1, ientry(r0)
        st   r1, vpc(r0)        ;   pc = the entry, all else 0
        jmp  enter

; ---- TRAP: the guest left real user mode; find a place for two registers
trap:   cmpi sp, 0x8000
        jc   s0_8
s8_16:  cmpi sp, 0xc000
        jc   s8_12
s12_16: cmpi sp, 0xe000
        jc   s12_14
s14_16: cmpi sp, 0xf000
        jc   s14
s15:    addi sp, scratch-0xeff8  ; sp was in [0xf000, 0xffff]
        push r1
        li   r1, scratch-0xeff8
        jmp  saved
s14:    addi sp, scratch-0xdff8  ; sp was in [0xe000, 0xefff]
        push r1
        li   r1, scratch-0xdff8
        jmp  saved
s12_14: cmpi sp, 0xd000
        jc   s12
s13:    addi sp, scratch-0xcff8  ; sp was in [0xd000, 0xdfff]
        push r1
        li   r1, scratch-0xcff8
        jmp  saved
s12:    addi sp, scratch-0xbff8  ; sp was in [0xc000, 0xcfff]
        push r1
        li   r1, scratch-0xbff8
        jmp  saved
s8_12:  cmpi sp, 0xa000
        jc   s8_10
s10_12: cmpi sp, 0xb000
        jc   s10
s11:    addi sp, scratch-0xaff8  ; sp was in [0xb000, 0xbfff]
        push r1
        li   r1, scratch-0xaff8
        jmp  saved
s10:    addi sp, scratch-0x9ff8  ; sp was in [0xa000, 0xafff]
        push r1
        li   r1, scratch-0x9ff8
        jmp  saved
s8_10:  cmpi sp, 0x9000
        jc   s8
s9:     addi sp, scratch-0x8ff8  ; sp was in [0x9000, 0x9fff]
        push r1
        li   r1, scratch-0x8ff8
        jmp  saved
s8:     addi sp, scratch-0x7ff8  ; sp was in [0x8000, 0x8fff]
        push r1
        li   r1, scratch-0x7ff8
        jmp  saved
s0_8:   cmpi sp, 0x4000
        jc   s0_4
s4_8:   cmpi sp, 0x6000
        jc   s4_6
s6_8:   cmpi sp, 0x7000
        jc   s6
s7:     addi sp, scratch-0x6ff8  ; sp was in [0x7000, 0x7fff]
        push r1
        li   r1, scratch-0x6ff8
        jmp  saved
s6:     addi sp, scratch-0x5ff8  ; sp was in [0x6000, 0x6fff]
        push r1
        li   r1, scratch-0x5ff8
        jmp  saved
s4_6:   cmpi sp, 0x5000
        jc   s4
s5:     addi sp, scratch-0x4ff8  ; sp was in [0x5000, 0x5fff]
        push r1
        li   r1, scratch-0x4ff8
        jmp  saved
s4:     addi sp, scratch-0x3ff8  ; sp was in [0x4000, 0x4fff]
        push r1
        li   r1, scratch-0x3ff8
        jmp  saved
s0_4:   cmpi sp, 0x2000
        jc   s0_2
s2_4:   cmpi sp, 0x3000
        jc   s2
s3:     addi sp, scratch-0x2ff8  ; sp was in [0x3000, 0x3fff]
        push r1
        li   r1, scratch-0x2ff8
        jmp  saved
s2:     addi sp, scratch-0x1ff8  ; sp was in [0x2000, 0x2fff]
        push r1
        li   r1, scratch-0x1ff8
        jmp  saved
s0_2:   cmpi sp, 0x1000
        jc   s0
s1:     addi sp, scratch-0x0ff8  ; sp was in [0x1000, 0x1fff]
        push r1
        li   r1, scratch-0x0ff8
        jmp  saved
s0:     addi sp, scratch+8       ; sp was in [0x0000, 0x0fff]
        push r1
        li   r1, scratch+8
        jmp  saved

; ---- SAVE: r1 holds what was added to sp; the guest's r1 is at [sp]
saved:  push r0                 ; the guest's r0 -> [sp], r1 now at [sp+1]
        li   r0, 0
        st   r2, vregs+2(r0)
        st   r3, vregs+3(r0)
        st   r4, vregs+4(r0)
        st   r5, vregs+5(r0)
        st   r6, vregs+6(r0)
        ld   r2, 0(sp)
        st   r2, vregs+0(r0)
        ld   r2, 1(sp)
        st   r2, vregs+1(r0)
        mov  r2, sp             ; the guest's sp = sp + 2 - (what was added)
        addi r2, 2
        sub  r2, r1
        st   r2, vregs+7(r0)
        ld   r2, 1(r0)          ; its pc, from the old PSW
        st   r2, vpc(r0)
        ld   r2, 0(r0)          ; its flags: the old PSW's low four bits
        li   r3, 15
        and  r2, r3
        st   r2, vflags(r0)
        li   sp, mstack         ; the monitor's own stack, for call/ret

; ---- DISPATCH on the cause the trap saved
        ld   r1, 4(r0)          ; cause
        ld   r2, 5(r0)          ; info
        cmpi r1, 1              ; a privileged instruction ...
        jnz  reflect
        ld   r3, vmode(r0)      ; ... in virtual supervisor mode?
        cmpi r3, 0
        jz   reflect            ; no: the guest's own trap
        ld   r3, vbase(r0)      ; yes: fetch the word it trapped on
        ld   r4, vpc(r0)
        add  r3, r4
        ld   r5, inner(r3)      ; opcode << 8 | rd << 4 | rs
        li   r4, 15
        mov  r3, r5
        and  r3, r4             ; r3 = rs
        mov  r6, r5
        li   r1, 4
        shr  r6, r1
        and  r6, r4             ; r6 = rd
        li   r1, 8
        shr  r5, r1             ; r5 = opcode
        cmpi r5, 0x30
        jz   e_rti
        cmpi r5, 0x31
        jz   e_ei
        cmpi r5, 0x32
        jz   e_di
        cmpi r5, 0x33
        jz   e_pushf
        cmpi r5, 0x34
        jz   e_popf
        cmpi r5, 0x35
        jz   e_rdmode
        cmpi r5, 0x36
        jz   e_rdbase
        cmpi r5, 0x37
        jz   e_rdbound
        cmpi r5, 0x38
        jz   e_wrr
        cmpi r5, 0x39
        jz   e_lptb
        cmpi r5, 0x3a
        jz   e_stimer
        cmpi r5, 0x3b
        jz   e_out
        cmpi r5, 0x3c
        jz   e_halt
        jmp  refuse             ; a privileged instruction this monitor does not know

; ---- REFLECT: the trap mechanism, on the guest (r1 = cause, r2 = info)
reflect: call vtrap
        jmp  enter

; ---- EMULATE: one instruction on the virtual CPU, as docs/isa.md says
e_rti:  ld   r3, inner+0(r0)    ; reload the PSW the guest's last trap saved
        call setpsw
        ld   r3, inner+1(r0)
        st   r3, vpc(r0)
        ld   r3, inner+2(r0)
        st   r3, vbase(r0)
        ld   r3, inner+3(r0)
        st   r3, vbound(r0)
        jmp  enter
e_ei:   li   r1, 1
        st   r1, vie(r0)
        jmp  e_next
e_di:   st   r0, vie(r0)
        jmp  e_next
e_pushf: ld  r2, vregs+7(r0)    ; push flags | ie << 4 on the guest's stack
        addi r2, -1
        call vtrans
        ld   r3, vflags(r0)
        ld   r1, vie(r0)
        li   r5, 4
        shl  r1, r5
        or   r3, r1
        st   r3, 0(r4)
        st   r2, vregs+7(r0)
        jmp  e_next
e_popf: ld   r2, vregs+7(r0)    ; pop flags and ie (supervisor: ie is set too)
        call vtrans
        ld   r3, 0(r4)
        mov  r1, r3
        li   r5, 15
        and  r1, r5
        st   r1, vflags(r0)
        li   r5, 4
        shr  r3, r5
        li   r5, 1
        and  r3, r5
        st   r3, vie(r0)
        addi r2, 1
        st   r2, vregs+7(r0)
        jmp  e_next
e_rdmode: li r1, 1              ; emulated only in supervisor mode
        st   r1, vregs(r6)
        jmp  e_next
e_rdbase: ld r1, vbase(r0)
        st   r1, vregs(r6)
        jmp  e_next
e_rdbound: ld r1, vbound(r0)
        st   r1, vregs(r6)
        jmp  e_next
e_wrr:  ld   r1, vregs(r6)      ; base <- rd, bound <- rs: the VIRTUAL R
        ld   r2, vregs(r3)
        st   r1, vbase(r0)
        st   r2, vbound(r0)
        jmp  e_next
e_lptb: ld   r1, vregs(r3)      ; paging off stays off; on is refused
        cmpi r1, 0
        jnz  refuse
        jmp  e_next
e_stimer: ld r1, vregs(r3)      ; a stopped timer stays stopped; arming it is refused
        cmpi r1, 0
        jnz  refuse
        st   r0, vpend(r0)
        jmp  e_next
e_out:  ld   r1, vregs(r3)      ; the guest's output is the monitor's
        out  r1
        jmp  e_next
e_halt: ld   r1, vpc(r0)
        addi r1, 2
        st   r1, vpc(r0)
        li   r1, 1
        st   r1, vhalted(r0)
        halt
refuse: li   r1, 1
        st   r1, refused(r0)
        halt
e_next: ld   r1, vpc(r0)        ; past the emulated instruction
        addi r1, 2
        st   r1, vpc(r0)

; ---- ENTER: run the guest directly, in real user mode
enter:  ld   r1, vbase(r0)      ; real R: base inner + vbase, bound clipped to
        ld   r2, isize(r0)      ; the guest's storage (popek's real_r, in assembly)
        cmp  r1, r2
        jnc  nowhere            ; vbase beyond its storage: bound 0
        sub  r2, r1             ; isize - vbase
        ld   r3, vbound(r0)
        cmp  r3, r2
        jnc  clipped
        mov  r2, r3
clipped: addi r1, inner
        jmp  setr
nowhere: li  r1, inner
        li   r2, 0
setr:   st   r1, 2(r0)          ; the old PSW that rti will load
        st   r2, 3(r0)
        ld   r1, vpc(r0)
        st   r1, 1(r0)
        ld   r1, vflags(r0)
        li   r2, 0x10           ; user mode, interrupts on (no timer runs)
        or   r1, r2
        st   r1, 0(r0)
        ld   r1, vregs+1(r0)
        ld   r2, vregs+2(r0)
        ld   r3, vregs+3(r0)
        ld   r4, vregs+4(r0)
        ld   r5, vregs+5(r0)
        ld   r6, vregs+6(r0)
        ld   sp, vregs+7(r0)
        ld   r0, vregs+0(r0)    ; last: r0 was the base
resume: rti                     ; the only way back to the guest

; ---- subroutines
; vtrap: the P&G trap mechanism on the virtual CPU (r1 = cause, r2 = info)
vtrap:  ld   r3, vflags(r0)
        ld   r4, vie(r0)
        li   r5, 4
        shl  r4, r5
        or   r3, r4
        ld   r4, vmode(r0)
        li   r5, 5
        shl  r4, r5
        or   r3, r4
        st   r3, inner+0(r0)    ; old PSW, pc, R, cause, info at the guest's 0..5
        ld   r3, vpc(r0)
        st   r3, inner+1(r0)
        ld   r3, vbase(r0)
        st   r3, inner+2(r0)
        ld   r3, vbound(r0)
        st   r3, inner+3(r0)
        st   r1, inner+4(r0)
        st   r2, inner+5(r0)
        ld   r3, inner+8(r0)    ; new PSW, pc, R from the guest's 8..11
        call setpsw
        ld   r3, inner+9(r0)
        st   r3, vpc(r0)
        ld   r3, inner+10(r0)
        st   r3, vbase(r0)
        ld   r3, inner+11(r0)
        st   r3, vbound(r0)
        ret

; setpsw: unpack the PSW word in r3 into flags, ie and mode
setpsw: mov  r4, r3
        li   r5, 15
        and  r4, r5
        st   r4, vflags(r0)
        mov  r4, r3
        li   r5, 4
        shr  r4, r5
        li   r5, 1
        and  r4, r5
        st   r4, vie(r0)
        mov  r4, r3
        li   r5, 5
        shr  r4, r5
        li   r5, 1
        and  r4, r5
        st   r4, vmode(r0)
        ret

; vtrans: the guest-physical word of guest-virtual r2, as the machine's
; relocation finds it, in r4 (a monitor address); a fault is reflected as
; MEMORY with info r2, and the emulated instruction has no other effect
vtrans: ld   r3, vbound(r0)
        cmp  r2, r3
        jnc  memfault           ; r2 >= bound
        ld   r4, vbase(r0)
        add  r4, r2
        jc   memfault           ; base + r2 wrapped round
        ld   r3, isize(r0)
        cmp  r4, r3
        jnc  memfault           ; beyond the guest's storage
        addi r4, inner
        ret
memfault: li r1, 2
        call vtrap
        jmp  enter

; ---- data
isize:  .word 0x400             ; set by the loader: the inner guest's storage size
ientry: .word 0x10              ; set by the loader: its entry point
refused: .word 0                ; 1: the guest armed the timer or turned paging on
; the virtual CPU, in the order popek compares guest state
vcpu:
vregs:  .word 0, 0, 0, 0, 0, 0, 0, 0
vpc:    .word 0
vflags: .word 0
vie:    .word 0
vmode:  .word 0
vbase:  .word 0
vbound: .word 0
vptbr:  .word 0
vtimer: .word 0
vpend:  .word 0
vhalted: .word 0
        .space 16
mstack:

        .org 0x400
scratch: .space 0x1008          ; the entry's parking area (see the top)

        .org 0x1440
inner:                          ; the inner guest's word 0
