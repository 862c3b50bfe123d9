"""The VMM designs popek ships, each a plug-in like any user's.

`base` holds the plumbing every software VMM shares (allocation, virtual
CPU, direct runs with trap handling); each other module is one design.
"""
