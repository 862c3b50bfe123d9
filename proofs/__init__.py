"""The Z3 side of popek: the spec's semantics as Z3 terms, and what follows.

Read in this order: ``symbolic`` (traced effects as Z3 terms over a
symbolic state), ``concrete`` (Z3 models <-> concrete states, one machine
cycle), ``solver`` (timeouts, unknown, model completion), ``classify``
(privileged / sensitive / innocuous per instruction), ``witness`` (replay
on the concrete machine), ``verdicts`` (Theorems 1 and 3), ``opaque``
(instructions traced with the memory layer cut out), ``simulation``
(trap-and-emulate proved faithful, one step, all states), ``safety``.
docs/theory.md states every definition beside Popek and Goldberg's.
"""
