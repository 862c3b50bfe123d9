; An inner guest for the monitor (examples/monitor/monitor.s): a kernel that
; serves system calls, and a user program that computes and calls it once
; every ten instructions, so that the monitor is entered often enough to be
; measured (`make bench` runs it bare, under the monitor, and two deep).
; sys 0: count the call (r6); sys 1: print the count and the sum, halt.
start:  li   r1, 0x20           ; new PSW: supervisor, interrupts off
        st   r1, 8(r0)
        li   r1, handler
        st   r1, 9(r0)
        st   r0, 10(r0)
        li   r1, 0x400
        st   r1, 11(r0)
        li   r6, 0              ; calls served
        st   r0, 0(r0)          ; old PSW: user mode
        li   r1, ustart-0x200
        st   r1, 1(r0)
        li   r1, 0x200          ; the user program: R = (0x200, 0x100)
        st   r1, 2(r0)
        li   r1, 0x100
        st   r1, 3(r0)
        rti

handler: ld  r5, 5(r0)          ; the call number
        cmpi r5, 0
        jnz  finish
        addi r6, 1
        ld   r5, 1(r0)          ; resume after the sys
        addi r5, 2
        st   r5, 1(r0)
        rti
finish: out  r6
        out  r3
        halt

        .org 0x200
ustart: li   r2, 0              ; i
        li   r3, 0              ; sum
uloop:  addi r2, 1
        add  r3, r2
        mov  r4, r3
        shr  r4, r2
        xor  r4, r3
        and  r4, r2
        or   r3, r4
        cmpi r2, 400
        sys  0
        jnz  uloop-0x200
        sys  1
