; Self-modifying code again, reached through an interrupt.  The kernel runs
; `out r1` at `site`, lets a timer tick fall due with interrupts off, then
; enables them; the interrupt handler overwrites `site` with `out r2` using
; ordinary stores and jumps there.  Output on bare hardware: 11 22.  The
; code sits away from page 0, where the trap mechanism writes the old PSW.
        .org 0x100
start:  li   r1, 0x20           ; new PSW: supervisor, interrupts off
        st   r1, 8(r0)
        li   r1, handler
        st   r1, 9(r0)
        st   r0, 10(r0)
        li   r1, 0x1000
        st   r1, 11(r0)
        li   r1, 11
        li   r2, 22
        li   r4, 3
        stimer r4               ; the tick falls due three instructions on
site:   out  r1
        ld   r3, flag(r0)
        cmpi r3, 0
        jnz  done               ; the second time through: stop
        ei                      ; the waiting tick is taken here
        halt                    ; not reached

handler: li  r3, 1
        st   r3, flag(r0)
        ld   r3, alt(r0)        ; copy `out r2` over the site
        st   r3, site(r0)
        ld   r3, alt+1(r0)
        st   r3, site+1(r0)
        jmp  site
done:   halt

alt:    out  r2                 ; only copied, never run here
flag:   .word 0
