; A guest for `popek migrate`: it never halts, and stores to a small working
; set (pages 0x40-0x59 of 0x100, about 10%), one store every ten or so
; instructions, as a long-running server writes its hot data.
start:  li   r1, 0x1000
        li   r5, 0
loop:   li   r4, 3
wait:   addi r4, -1             ; a little work between stores
        jnz  wait
        st   r5, 0(r1)          ; the next page of the working set
        addi r5, 1
        addi r1, 64
        cmpi r1, 0x1680
        jnz  loop
        li   r1, 0x1000
        jmp  loop
