; A tiny kernel with a system-call handler.  It installs the handler as the
; new PSW, then enters a user program by placing a user-mode PSW in the
; old-PSW area and returning to it with rti.  The user program lives at
; physical 0x400 and sees it as virtual 0 (R = base 0x400, bound 0x100);
; its labels are written label-0x400 for that reason.
; Calls: sys 1 prints r1; sys 0 ends the program (the kernel halts).
start:  li   r1, 0x20           ; new PSW word: supervisor, interrupts off
        st   r1, 8(r0)
        li   r1, handler
        st   r1, 9(r0)
        st   r0, 10(r0)         ; new R: base 0 ...
        li   r1, 0x1000         ; ... bound 4096
        st   r1, 11(r0)
        li   sp, 0x3f0          ; the kernel's stack
        st   r0, 0(r0)          ; old PSW word: user mode, interrupts off
        li   r1, ustart-0x400
        st   r1, 1(r0)          ; old PC: the user program's entry (virtual)
        li   r1, 0x400
        st   r1, 2(r0)          ; old R: base 0x400 ...
        li   r1, 0x100
        st   r1, 3(r0)          ; ... bound 0x100
        rti                     ; enter the user program

handler: push r2
        ld   r2, 4(r0)          ; the cause
        cmpi r2, 4              ; a system call?
        jnz  fault
        ld   r2, 5(r0)          ; the call number (the trap's info)
        cmpi r2, 0
        jz   exit
        out  r1                 ; call 1: print r1
        ld   r2, 1(r0)
        addi r2, 2              ; resume after the sys instruction
        st   r2, 1(r0)
        pop  r2
        rti
exit:   halt
fault:  li   r1, 0xfa00         ; anything else: print 0xfa00 + cause, stop
        add  r1, r2
        out  r1
        halt

        .org 0x400
ustart: li   sp, 0x100          ; the user stack, at the top of its R
        li   r4, 0              ; print Fibonacci numbers: a
        li   r5, 1              ; b
        li   r6, 10             ; how many
uloop:  mov  r1, r4
        sys  1
        push r4                 ; keep every number on the user stack
        mov  r1, r4
        add  r1, r5
        mov  r4, r5
        mov  r5, r1
        addi r6, -1
        jnz  uloop-0x400
        st   r4, result-0x400(r0)
        sys  0
result: .word 0
