"""``make demo`` (``python -m demo``): the target and the initiator composed, from outside both.

The demo is the one place besides tests/ that uses both wings at once: it starts the target on
its embedded default, drives it with the initiator (discovery, both paths, verified I/O, a path
killed under load) and narrates. Keeping it here lets ``target`` and ``initiator`` each stand
without the other (tests/test_layering.py holds them to it).
"""
