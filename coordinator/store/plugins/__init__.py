"""Store types, one module each: every module here is imported by the registry and registers its class."""
