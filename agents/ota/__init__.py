"""The device side of over-the-air updates, one concept per module.

* :mod:`~agents.ota.files` - where everything lives under ``{data_dir}/ota``;
* :mod:`~agents.ota.outcome` - how an update ends (:class:`UpdateFailed`) and its record;
* :mod:`~agents.ota.compat` - whether an update's ``requires`` fits this device;
* :mod:`~agents.ota.store` - the resumable on-disk download;
* :mod:`~agents.ota.extract` - unpacking an agent bundle without escaping its folder;
* :mod:`~agents.ota.slots` - the A/B slots and the atomic ``current`` switch;
* :mod:`~agents.ota.install` - what each kind of update does once downloaded;
* :mod:`~agents.ota.trial` - a new agent's probation: commit or roll back;
* :mod:`~agents.ota.current` - the update the agent is busy with (shared by threads);
* :mod:`~agents.ota.progress` - the retained ``state/ota`` report;
* :mod:`~agents.ota.offer` - the ``ota`` command: check an offer and answer it;
* :mod:`~agents.ota.download_worker` - the worker thread that pulls the chunks;
* :mod:`~agents.ota.installer` - a complete download installed by kind;
* :mod:`~agents.ota.trial_watch` - settling the last trial at start, judging our own.

:mod:`agents.ota.host` ties them to the bus.
"""
