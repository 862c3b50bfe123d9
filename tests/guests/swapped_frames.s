; Straight-line code that crosses a page boundary into a frame that is not
; the next one: virtual page 1 is frame 2, virtual page 2 is frame 1.  The
; loop calls virtual 0x7c three times (often enough to be compiled into a
; block); the two instructions there end page 1, and the `ret` is at
; virtual 0x80, in frame 1.  Frame 3, right after frame 2 in storage, holds
; `addi r5, 100`: a machine whose block ran on in storage instead of
; through the page table prints more than 9.
        .org 0x100
start:  li   r1, 0x300          ; the page table
        li   r2, 7              ; page 0 -> frame 0 (present, write, user)
        st   r2, 0(r1)
        li   r2, 0x87           ; page 1 -> frame 2
        st   r2, 1(r1)
        li   r2, 0x47           ; page 2 -> frame 1
        st   r2, 2(r1)
        li   r3, 3              ; pages 3..15: identity
        li   r2, 0xc7
fill:   st   r2, 0x300(r3)
        addi r2, 64
        addi r3, 1
        cmpi r3, 16
        jnz  fill
        li   sp, 0x280
        lptb r1                 ; paging on
        li   r6, 3
again:  call 0x7c
        addi r6, -1
        jnz  again
        out  r5
        halt
        .org 0x40               ; frame 1: virtual 0x80
        ret
        .org 0xbc               ; frame 2's end: virtual 0x7c
        addi r5, 1
        addi r5, 2
        .org 0xc0               ; frame 3: not virtual 0x80
        addi r5, 100
        ret
