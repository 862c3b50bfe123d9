; Self-modifying kernel code that never reads its own instructions: each
; pass rewrites the immediate of `site` (an innocuous li) with an ordinary
; store and runs it again, printing what it loaded.  Binary translation must
; drop the stale translation of `site` (its page is write-protected); the
; paravirtualizing pass can rewrite this guest, since it writes code but
; never reads a rewritten word.
start:  li   r5, 4              ; passes
        li   r2, 100
loop:
site:   li   r1, 0              ; the immediate is rewritten below
        out  r1
        addi r2, 11
        st   r2, site+1(r0)     ; the next pass loads r2
        addi r5, -1
        jnz  loop
        halt
