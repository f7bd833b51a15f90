"""The command room: what the target does with each NVMe command it receives.

- :mod:`target.commands.request`: what a handler receives (the command, its queue's context)
  and returns (a reply, pending, or an awaitable for slow storage); nvmet's prepare/execute split.
- :mod:`target.commands.dispatch`: queue-level checks and routing to a handler
  (``nvmet_req_init``).
- :mod:`target.commands.fabrics`: Connect, Property Get/Set, Disconnect.
- :mod:`target.commands.admin`: Identify, Get Log Page (including the discovery log), features,
  Keep Alive, Asynchronous Event Requests, Abort.
- :mod:`target.commands.io`: NVM Read, Write, Compare, Flush, Write Zeroes, Dataset Management.

Handlers see the model (:mod:`target.state`, :mod:`target.controller`) and never the socket:
:mod:`target.connection` calls them and moves the data.
"""
