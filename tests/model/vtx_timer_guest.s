; A generated guest (popek verify, emulator on vtx): a timer interrupt
; taken while the kernel runs its own guest with vmrun.
        .org 0x8
        .word 0x20            ; 0008
        .word 0xc0            ; 0009
        .word 0x0             ; 000a
        .word 0x400           ; 000b
        .org 0x10
        li sp, 0x2c0          ; 0010
        jmp 20                ; 0012
        li r5, 3              ; 0014
        stimer r5             ; 0016
        li sp, 0x100          ; 0018
        li r6, 0              ; 001a
        ld r5, 0x2f0(r6)      ; 001c
        st r5, 0(r6)          ; 001e
        ld r5, 0x2f1(r6)      ; 0020
        st r5, 1(r6)          ; 0022
        ld r5, 0x2f2(r6)      ; 0024
        st r5, 2(r6)          ; 0026
        ld r5, 0x2f3(r6)      ; 0028
        st r5, 3(r6)          ; 002a
        rti                   ; 002c
        .org 0xc0
        vmrun r5              ; 00c0
        li r6, 0              ; 00c2
        ld r5, 12(r6)         ; 00c4
        addi r5, 1            ; 00c6
        st r5, 12(r6)         ; 00c8
        cmpi r5, 4            ; 00ca
        jz 226                ; 00cc
        ld r5, 4(r6)          ; 00ce
        cmpi r5, 5            ; 00d0
        jz 220                ; 00d2
        ld r5, 1(r6)          ; 00d4
        addi r5, 2            ; 00d6
        st r5, 1(r6)          ; 00d8
        rti                   ; 00da
        li r5, 3              ; 00dc
        stimer r5             ; 00de
        rti                   ; 00e0
        halt                  ; 00e2
        .org 0x100
        jmp 2                 ; 0100
        halt                  ; 0102
        .org 0x2f0
        .word 0x10            ; 02f0
        .word 0x0             ; 02f1
        .word 0x100           ; 02f2
        .word 0x100           ; 02f3
        .entry 0x10

