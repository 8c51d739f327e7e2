"""Detector backends, one module each: the registry imports every module here and each registers its class."""
