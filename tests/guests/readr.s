; Reading R and the mode.  The kernel prints what rdmode, rdbase and rdbound
; return in supervisor mode, then enters a user program (R = base 0x400,
; bound 0x100) that reads them again and prints them through a system call.
; Where these reads are privileged (pg), the user's reads trap instead, and
; the kernel prints 0xfa01 for each and skips it.
start:  li   r1, 0x20
        st   r1, 8(r0)
        li   r1, handler
        st   r1, 9(r0)
        st   r0, 10(r0)
        li   r1, 0x1000
        st   r1, 11(r0)
        rdmode r1
        out  r1
        rdbase r1
        out  r1
        rdbound r1
        out  r1
        st   r0, 0(r0)          ; enter the user program, as in syscall.s
        li   r1, ustart-0x400
        st   r1, 1(r0)
        li   r1, 0x400
        st   r1, 2(r0)
        li   r1, 0x100
        st   r1, 3(r0)
        rti

handler: ld  r2, 4(r0)
        cmpi r2, 4
        jz   syscall
        li   r3, 0xfa00         ; not a system call: print 0xfa00 + cause
        add  r3, r2
        out  r3
        jmp  resume
syscall: ld  r2, 5(r0)
        cmpi r2, 0
        jz   exit
        out  r1
resume: ld   r2, 1(r0)
        addi r2, 2
        st   r2, 1(r0)
        rti
exit:   halt

        .org 0x400
ustart: li   r1, 0x5555         ; what r1 holds if a read below traps
        rdmode r1
        sys  1
        rdbase r1
        sys  1
        rdbound r1
        sys  1
        sys  0
