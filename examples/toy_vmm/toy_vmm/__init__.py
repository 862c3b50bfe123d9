"""popek-toy-vmm: the worked example of docs/writing-a-vmm.md."""
