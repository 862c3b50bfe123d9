; The smoke program `make verify` runs: write "Hello" to the output port and
; halt.  It starts in supervisor mode (the power-on state), where `out` and
; `halt` are allowed in every profile.
start:  li   r1, 0              ; r1 indexes the message
next:   ld   r2, message(r1)    ; r2 <- message[r1]
        cmpi r2, 0
        jz   done               ; the message ends with a 0 word
        out  r2
        addi r1, 1
        jmp  next
done:   halt

message: .word 72, 101, 108, 108, 111, 0   ; "Hello"
