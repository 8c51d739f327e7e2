"""The device side of over-the-air updates, one concept per module.

* :mod:`~agents.ota.files` - where everything lives under ``{data_dir}/ota``;
* :mod:`~agents.ota.outcome` - how an update ends (:class:`UpdateFailed`) and its record;
* :mod:`~agents.ota.compat` - whether an update's ``requires`` fits this device;
* :mod:`~agents.ota.store` - the resumable on-disk download;
* :mod:`~agents.ota.extract` - unpacking an agent bundle without escaping its folder;
* :mod:`~agents.ota.slots` - the A/B slots and the atomic ``current`` switch;
* :mod:`~agents.ota.install` - what each kind of update does once downloaded;
* :mod:`~agents.ota.trial` - a new agent's probation: commit or roll back.

:mod:`agents.ota_host` ties them to the bus.
"""
