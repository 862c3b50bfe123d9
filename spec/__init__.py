"""The instruction set of popek's machine, written once.

Read in this order: ``state`` (what the machine holds), ``bits`` (the
vocabulary), ``sem`` (how a definition records effects), ``memory`` (address
translation), ``trap`` (the P&G trap mechanism and timer), ``instructions``
(the manual), ``profiles`` (the variants), ``encoding`` and ``asm``.
"""
