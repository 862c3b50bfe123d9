; A page-table-heavy kernel.  It identity-maps pages 0-14 with a table at
; 0x300, turns paging on, and then on every pass remaps virtual page 15 to
; another frame (one page-table write) and stores and loads through the new
; mapping.  Shadow paging pays for each page-table write (a fault, an
; emulated store, shadow entries dropped); nested paging pays on every
; access (the hardware walks the guest's table and the nested one).
; bench/advanced_bench.py varies the accesses per pass (ACCESSES below).
start:  li   r1, 0x300          ; r1: the entry being written
        li   r2, 7              ; present | write | user, frame 0
        li   r3, 15             ; identity-map 15 pages
fill:   st   r2, 0(r1)
        addi r1, 1
        addi r2, 64
        addi r3, -1
        jnz  fill
        li   r1, 0x300
        lptb r1                 ; paging on
        li   r6, 8              ; passes
pass:   mov  r2, r6
        addi r2, 15             ; frame number 23 down to 16
        li   r3, 6
        shl  r2, r3
        addi r2, 7              ; present | write | user
        st   r2, 0x30f(r0)      ; page 15 -> that frame: a page-table write
        li   r3, 20             ; ACCESSES this pass
acc:    li   r1, 63
        and  r1, r3             ; a word of page 15
        st   r3, 0x3c0(r1)
        ld   r4, 0x3c0(r1)
        add  r5, r4
        addi r3, -1
        jnz  acc
        addi r6, -1
        jnz  pass
        out  r5
        li   r1, 0
        lptb r1                 ; paging off: read one remapped frame physically
        ld   r4, 0x5c1(r0)      ; frame 23, word 1
        out  r4
        halt
