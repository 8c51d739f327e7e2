"""Home Assistant's picture of the device, one concept per module.

* :mod:`~agents.home_assistant.publisher` - discovery documents and readable state topics over the session;
* :mod:`~agents.home_assistant.host` - the publisher in the agent, describing what the device really reports.
"""
