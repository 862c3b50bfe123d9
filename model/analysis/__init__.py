"""Static analysis of guests and instructions, read off the spec.

Machinery the VMM designs in ``popek.model.vmms`` use, not designs:

* `may_be_sensitive`: which instructions a software VMM must not let run on
  the host as they are; syntactic and conservative (a superset of what
  ``popek.proofs.classify`` decides sensitive).
* `reach`: what a guest can ever read and run, a sound over-approximation by
  abstract interpretation (the paravirtualizing pass's analysis); its value
  domain is `intervals`, and its exact prefix from reset runs compiled in
  `reach_exact`.
"""
