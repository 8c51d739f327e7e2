"""The device side: agent runtime, gateway metrics, camera pipelines."""
