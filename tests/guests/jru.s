; For the hybrid profile: the kernel enters its user program with jru
; ("jump and enter user mode", the PDP-10's JRST 1), not rti.  The user
; program then tries a privileged instruction (out), which must trap to the
; kernel; the kernel prints 0xfa00 + the cause and halts.  Only the hybrid
; profile has jru.
start:  li   r1, 0x20
        st   r1, 8(r0)
        li   r1, handler
        st   r1, 9(r0)
        st   r0, 10(r0)
        li   r1, 0x1000
        st   r1, 11(r0)
        jru  user

handler: ld  r2, 4(r0)
        li   r3, 0xfa00
        add  r3, r2
        out  r3
        halt

user:   li   r1, 7
        addi r1, 35
        out  r1                 ; privileged: traps in user mode
        li   r1, 0x0bad         ; reached only if out did not trap
        out  r1
        halt
