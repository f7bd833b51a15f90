"""Differential testing of the target against the Linux kernel's nvmet (issue 15).

A *case* is a sequence of host-side byte strings sent on one or more TCP connections. The same
case goes to nvmet (in ../shared/linuxvm, on a forwarded port) and to our target; what comes
back (PDU types, TermReq FES/FEI, CQE status, data lengths, R2T offsets and lengths, whether
the connection closed) is summarised, normalised and compared.

* :mod:`.pdus` builds host PDUs from plain ``struct`` (independent of the code under test) and
  names the mutable fields of each.
* :mod:`.cases` makes cases: the tolerance table, seeded mutations of valid sessions, sequences
  and the opcode sweep.
* :mod:`.runner` sends a case to one address and records an :class:`~.runner.Observation`.
* :mod:`.compare` normalises observations (the documented list of what may legitimately
  differ) and diffs them.
* ``python -m tests.differential`` boots nvmet, starts our target, runs a seeded batch and
  reports every divergence (``--help``).
"""
