; Code reached through a mapping that changes.  The kernel identity-maps
; pages 0-14 (table at 0x300), maps virtual page 15 (0x3c0) to frame 0x800,
; turns paging on, and calls 0x3c0 three times per mapping (often enough for
; the code there to be compiled into blocks); between rounds it remaps page
; 15 to the other frame (0x840, then back): one page-table write.  Frame
; 0x800 adds 1 to r5, frame 0x840 adds 100, so the bare machine prints 306.
; A shadow-paging VMM that kept a decode made through the old mapping runs
; the old frame's code after the remap, and prints something else.
start:  li   r7, 0x280          ; stack in identity-mapped page 9
        li   r1, 0x300          ; r1: the entry being written
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
        li   r4, 0x40           ; 0x807 ^ 0x847: the other frame
        li   r6, 3              ; rounds: frame 0x800, 0x840, 0x800
round:  li   r3, 3              ; calls this round
again:  call 0x3c0
        addi r3, -1
        jnz  again
        xor  r2, r4
        st   r2, 0x30f(r0)      ; remap page 15: a page-table write
        addi r6, -1
        jnz  round
report: out  r5
        halt
        .org 0x800
        addi r5, 1
        ret
        .org 0x840
        addi r5, 100
        ret
