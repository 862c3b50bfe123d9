; Interrupt-driven: the kernel arms the timer and enters a user program with
; interrupts enabled.  Each timer interrupt (taken between two user
; instructions) prints how far the user loop got, re-arms the timer and
; returns; after five ticks the kernel halts.
start:  li   r1, 0x20           ; new PSW: supervisor, interrupts off
        st   r1, 8(r0)
        li   r1, tick
        st   r1, 9(r0)
        st   r0, 10(r0)
        li   r1, 0x1000
        st   r1, 11(r0)
        li   r6, 0              ; ticks seen (the user program leaves r6 alone)
        li   r1, 0x10           ; old PSW word: user mode, interrupts on
        st   r1, 0(r0)
        li   r1, ustart-0x400
        st   r1, 1(r0)
        li   r1, 0x400
        st   r1, 2(r0)
        li   r1, 0x100
        st   r1, 3(r0)
        li   r1, 37             ; first tick after 37 instructions
        stimer r1
        rti

tick:   ld   r2, 4(r0)
        cmpi r2, 5              ; the timer?
        jnz  fault
        out  r3                 ; the user loop's counter
        addi r6, 1
        cmpi r6, 5
        jz   done
        li   r2, 23             ; later ticks every 23 instructions
        stimer r2
        rti                     ; an interrupt saved the next PC: no adjustment
done:   halt
fault:  li   r1, 0xfa00
        add  r1, r2
        out  r1
        halt

        .org 0x400
ustart: li   r3, 0
        li   r4, 0
uloop:  addi r3, 1
        add  r4, r3
        st   r4, sum-0x400(r0)
        jmp  uloop-0x400
sum:    .word 0
