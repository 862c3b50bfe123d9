"""Hypervisor types as host configurations (issue 13, item 3).

The lecture's three types differ in what owns the host machine, and each is
a configuration of popek's one machine:

* **type 1** (bare-metal VMM): the VMM owns the host; a host trap enters the
  VMM directly.  This is every design in `popek.model.vmms` as it stands,
  and the baseline the others are measured against.
* **type 2** (hosted VMM, `hosted`): a host operating system owns the host.
  A trap goes first to the host OS's handler, written in popek assembly
  (``examples/host_os/host_os.s``) and run on the host machine, which
  passes it to the VMM process as a message; the extra host steps per trap
  are counted.
* **type 0** (partitioning, `partition`): no VMM at run time.  Each guest
  owns a CPU and a range of storage, kept apart by the hardware's
  partition register (the `partition` feature, ``spec/partition.py``); its
  kernel runs in real supervisor mode and nothing is emulated.
"""

HOST_TYPES = (0, 1, 2)
