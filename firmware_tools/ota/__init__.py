"""Over-the-air updates from the operator's side, one concept per module.

* :mod:`~firmware_tools.ota.publish` - ``edge-flash ota publish``: the request, the session, the run;
* :mod:`~firmware_tools.ota.discovery` - which devices an update goes to;
* :mod:`~firmware_tools.ota.rollout` - the rollout engine: offer, serve chunks, follow outcomes;
* :mod:`~firmware_tools.ota.transfer` - what the server knows about one device's update;
* :mod:`~firmware_tools.ota.view` - the live terminal view, or log lines;
* :mod:`~firmware_tools.ota.report` - the summary and the exit code's basis.
"""
