"""Commands to this device, one concept per module.

* :mod:`~agents.commands.dispatcher` - decode, de-duplicate, run the handler, answer, survive bad input;
* :mod:`~agents.commands.handlers` - the built-in commands and their argument shapes;
* :mod:`~agents.commands.host` - the dispatcher in the agent, with the agent's handlers.
"""
