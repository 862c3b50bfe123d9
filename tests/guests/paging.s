; Paging on and off again.  The kernel builds a page table at 0x300 that maps
; virtual pages 0-14 to themselves and page 15 (0x3c0-0x3ff) to frame 0x800,
; turns paging on, writes through the remapped page, turns paging off, and
; reads the frame back physically.  (Pages are 64 words.)
start:  li   r1, 0x300          ; r1: the entry being written
        li   r2, 7              ; present | write | user, frame 0
        li   r3, 15             ; identity-map 15 pages
fill:   st   r2, 0(r1)
        addi r1, 1
        addi r2, 64
        addi r3, -1
        jnz  fill
        li   r2, 0x807          ; page 15 -> frame 0x800
        st   r2, 0(r1)
        li   r1, 0x300
        lptb r1                 ; paging on
        li   r4, 0x1234
        st   r4, 0x3c5(r0)      ; virtual 0x3c5 is physical 0x805
        ld   r5, 0x3c5(r0)
        out  r5
        li   r1, 0
        lptb r1                 ; paging off
        ld   r6, 0x805(r0)      ; the same word, physically
        out  r6
        halt
