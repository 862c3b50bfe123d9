; A critical section the x86 way: save the flags word (with its
; interrupt-enable bit) with pushf, disable interrupts, update shared state,
; and restore the saved flags with popf.  A timer interrupt prints the
; shared counter.  Inside the critical section the kernel also prints the
; flags word it reads back, which shows the interrupt-enable bit as the
; machine holds it.  Runs in supervisor mode throughout.
start:  li   r1, 0x20
        st   r1, 8(r0)
        li   r1, tick
        st   r1, 9(r0)
        st   r0, 10(r0)
        li   r1, 0x1000
        st   r1, 11(r0)
        li   sp, 0x3f0
        li   r5, 0              ; the shared counter
        li   r6, 0              ; ticks seen
        li   r1, 40
        stimer r1
        ei
loop:   pushf                   ; save flags and IE (on)
        di                      ; enter the critical section
        addi r5, 1
        pushf                   ; what does the flags word say now?
        pop  r2
        cmpi r5, 3
        jnz  quiet
        out  r2                 ; once: the flags word with IE off
quiet:  popf                    ; leave: IE back on
        jmp  loop

tick:   push r1
        out  r5
        addi r6, 1
        cmpi r6, 4
        jz   done
        li   r1, 40
        stimer r1
        pop  r1
        rti
done:   halt
