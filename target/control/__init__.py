"""The control room: how an operator watches and changes a running target, and breaks it.

- :mod:`target.control.actions`: the operator actions as plain methods (ports down/up, ANA
  states, namespaces, faults), each logged with a timestamp.
- :mod:`target.control.faults`: fault rules: which commands they match and what they do; the
  connection applies them, ``[[fault]]`` tables in the configuration install them at start.
- :mod:`target.control.httpapi`: the HTTP JSON control API (and its OpenAPI document) and the
  Prometheus endpoint.
- :mod:`target.control.ctl`: ``nvmeof-target ctl``, the API's command-line client.
- :mod:`target.control.metrics`: Prometheus metrics, read from the model at scrape time.
"""
