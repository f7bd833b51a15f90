"""nvmeof-emu target: the Trio daemon that serves NVMe/TCP (``nvmeof-target``).

The protocol itself is :mod:`nvmeof` (sans-IO); this package runs it. The top of the folder is
the daemon and its model, rooms below hold the rest:

- :mod:`target.cli` (``nvmeof-target``, ``python -m target``) and :mod:`target.daemon` (the
  listeners and tasks of one running target).
- :mod:`target.connection`: one TCP connection, bytes in and out of
  :class:`nvmeof.tcp.controller.ControllerConnection`, commands to their handlers.
- The model: :mod:`target.state` (subsystems, ports, ANA, the discovery log generation),
  :mod:`target.subsystem` (subsystems and namespaces), :mod:`target.backends` (their storage),
  :mod:`target.port` (listeners and per-port ANA states), :mod:`target.controller` (one host
  association: registers, features, AERs, keep-alive).
- :mod:`target.config`: what a target is built from, and the files it is read from.
- :mod:`target.commands`: the command handlers (Fabrics, admin, discovery, NVM I/O).
- :mod:`target.control`: the operator's surface on a running target (actions, fault rules,
  HTTP control API, ``nvmeof-target ctl``, Prometheus metrics).

The target never imports :mod:`initiator` (tests/test_layering.py holds it to that).
"""
