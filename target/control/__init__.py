"""The control room: how an operator watches and changes a running target, and breaks it.

- :mod:`target.control.live`: live configuration: the running target brought to a wanted
  configuration by its difference (subsystems, namespaces, hosts, ports, referrals, ANA).
- :mod:`target.control.actions`: the operator actions as plain methods (paths down/up, ANA
  states, every live configuration change, faults, status), each kept in the audit trail.
- :mod:`target.control.faults`: fault rules: which commands they match and what they do; the
  connection applies them, ``[[fault]]`` tables in the configuration install them at start.
- :mod:`target.control.routes` (handlers), :mod:`target.control.openapi` (the route table and
  its OpenAPI document), :mod:`target.control.httpapi` (the servers): the HTTP JSON control
  API and the Prometheus endpoint.
- :mod:`target.control.aclient` (async) and :mod:`target.control.client` (blocking, generated
  from it): the typed Python client; :mod:`target.control.clientbase` what both share.
- :mod:`target.control.ctl` (with :mod:`target.control.ctlformat`): ``nvmeof-target ctl``, a
  thin command line over the blocking client.
- :mod:`target.control.metrics`: Prometheus metrics, read from the model at scrape time.
"""
