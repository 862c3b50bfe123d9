; A host operating system's trap entry: the kernel of a type 2 host.
;
;      guest (user mode, inside the VMM process's storage)
;        |  a trap: P&G's mechanism saves the old PSW at 0..5
;        v  and loads the kernel's new PSW from 8..11
;      THIS KERNEL (supervisor mode, R = its own words 0..0x3ff)
;        |  counts the trap, checks that a process raised it,
;        |  writes a message for the VMM process and upcalls
;        v  (sys UPCALL)
;      the VMM process (popek's Python design) handles the message
;        |  and resumes the guest
;        v
;      guest
;
; Under a type 1 host the trap goes straight to the VMM; everything this
; file runs is the extra cost of a type 2 host, counted per trap by
; popek.model.hosts.hosted.  The kernel lives in the VMM's reserved host
; words below 0x400 (the designs keep their tables at 0x400 and above,
; their guests at 0x1000 and above) and its R lets it touch nothing else.
;
; The words the Python side knows (popek.model.hosts.hosted):
;   MSG    0x1c0  the message: cause, info, pc that trapped, sequence number
;   upcall: sys 1; panic: sys 2 (a trap the kernel cannot attribute)

        .org  0x8               ; the new PSW: the kernel's entry
        .word 0x20              ; supervisor mode, interrupts off, flags clear
        .word entry
        .word 0                 ; base 0
        .word 0x400             ; bound: the kernel's own words only

        .org  0x10
entry:  li   sp, 0x300          ; the kernel's stack (the trapped context is
        li   r0, 0              ;   the VMM process's: see hosted.py)
        ld   r1, 4(r0)          ; the cause the trap saved
        cmpi r1, 9
        jnc  panic              ; not a cause this kernel knows
        ld   r2, 0x180(r1)      ; per-cause trap counts: the kernel's statistics
        addi r2, 1
        st   r2, 0x180(r1)
        ld   r3, 0x100(r1)      ; dispatch on the cause
        jr   r3

; Every cause a guest under a VMM can raise is a signal to the VMM process,
; once the kernel has checked that the trap came from a process (user mode)
; and not from itself.
signal: ld   r4, 0(r0)          ; the PSW that trapped
        li   r5, 0x20           ; its mode bit
        and  r4, r5
        jnz  panic              ; supervisor mode: the kernel's own fault
        st   r1, 0x1c0(r0)      ; the message: cause,
        ld   r4, 5(r0)
        st   r4, 0x1c1(r0)      ;   info,
        ld   r4, 1(r0)
        st   r4, 0x1c2(r0)      ;   the pc that trapped,
        ld   r4, 0x1c3(r0)
        addi r4, 1
        st   r4, 0x1c3(r0)      ;   and a sequence number
        sys  1                  ; upcall: the VMM process runs next
panic:  sys  2

        .org  0x100             ; dispatch table, by cause (spec/state.py Cause)
        .word panic             ; 0 none
        .word signal            ; 1 privileged instruction
        .word signal            ; 2 memory (bounds)
        .word signal            ; 3 page
        .word signal            ; 4 system call
        .word signal            ; 5 timer
        .word signal            ; 6 illegal instruction
        .word panic             ; 7 vm exit (no vtx guest runs here)
        .word panic             ; 8 nested page fault
