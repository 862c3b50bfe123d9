; A page-table write made while the guest is in its *own* guest mode.  The
; kernel identity-maps pages 0-14 (table at 0x300), maps virtual page 15
; (0x3c0) to frame 0x800, turns paging on and reads 0x3c0 (1).  It then
; enters a guest of its own (vmrun, VMCS at 0x200: no nested table, so that
; guest's physical addresses are the kernel's) which remaps the kernel's page
; 15 to frame 0x840 (one store into the table) and halts, which exits back to
; the kernel (halt's exit control is set).  The kernel reads 0x3c0 again
; (100): the bare machine prints 101.  A VM exit reads the guest's state, not
; its storage: a shadow-paging VMM that keeps the entry it built for page 15
; before the vmrun reads frame 0x800 again, and prints 2.
start:  li   r1, 0x300          ; r1: the entry being written
        li   r2, 7              ; present | write | user, frame 0
        li   r3, 15             ; identity-map 15 pages
fill:   st   r2, 0(r1)
        addi r1, 1
        addi r2, 64
        addi r3, -1
        jnz  fill
        li   r2, 0x807          ; page 15 -> frame 0x800
        st   r2, 0(r1)
        li   r1, 0x300
        lptb r1                 ; paging on
        ld   r5, 0x3c0(r0)      ; frame 0x800: 1
        li   r1, 0x200
        vmrun r1                ; the kernel's own guest runs nested, to its halt
        ld   r6, 0x3c0(r0)      ; frame 0x840 now: 100
        add  r5, r6
        out  r5
        halt
nested: st   r2, 0x30f(r0)      ; the kernel's entry for page 15 -> frame 0x840 (r2 = 0x847)
        halt                    ; exits: back to the kernel after its vmrun
        .org 0x200              ; the VMCS (spec/vtx.py: SAVED order)
        .word 1, 0, 0, 0        ; CTRL: halt exits; NPT: none; reason; qualification
        .word 0, 0, 0x847, 0, 0, 0, 0, 0        ; r0-r7 (r2: frame 0x840, present | write | user)
        .word nested, 0x20, 0, 4096, 0, 0, 0    ; pc, psw (supervisor), base, bound, ptbr, timer, pend
        .org 0x800
        .word 1
        .org 0x840
        .word 100
