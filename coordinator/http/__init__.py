"""The coordinator's HTTP face: REST API under ``/api/v1``, a WebSocket live feed, Prometheus
``/metrics``, ``/healthz`` and ``/readyz``, and the dashboard, all served by one uvicorn server
inside ``edge-coordinator start``.

One module per concept: :mod:`.config` (the ``[http]`` table), :mod:`.context` (what the routes
read), :mod:`.errors` and :mod:`.params` (the API's conventions), a module per resource
(:mod:`.devices`, :mod:`.history`, :mod:`.camera_events`, :mod:`.anomalies`,
:mod:`.coordination`, :mod:`.export`, :mod:`.fleet`), :mod:`.prometheus`, :mod:`.health`,
:mod:`.live_feed` and :mod:`.websocket` (the live feed and its route), :mod:`.dashboard` (the static
files), :mod:`.app` (assembly) and :mod:`.server` (uvicorn in a thread).
"""
