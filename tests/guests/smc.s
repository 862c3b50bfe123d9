; Self-modifying code around a privileged instruction.  The kernel runs
; `out` at `site`, then copies another instruction over it with ordinary
; stores and runs the site again: a VMM that emulates `site` must decode
; what is there now, not what it decoded the first time.
start:  li   r1, 11
        li   r2, 22
        li   r5, 2              ; passes
site:   out  r1                 ; rewritten below to `out r2`, then to `halt`
        addi r5, -1
        jz   last
        ld   r3, alt(r0)        ; copy `out r2` over the site
        st   r3, site(r0)
        ld   r3, alt+1(r0)
        st   r3, site+1(r0)
        jmp  site
last:   ld   r3, stop(r0)       ; copy `halt` over the site
        st   r3, site(r0)
        ld   r3, stop+1(r0)
        st   r3, site+1(r0)
        jmp  site

alt:    out  r2                 ; never run here, only copied
stop:   halt
