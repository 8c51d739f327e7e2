"""Gateway metric collectors, each a registered class chosen by name in ``[metrics] collectors``."""
