"""Batteries of checks every plugin of a kind must pass, run over every registered type.

Like river's ``river/checks``: each module yields check functions for one
plugin type; ``tests/test_plugin_checks.py`` parametrises one test over every
registered type and every check, so a new plugin file is checked without a
line of test written for it. Behaviour particular to one plugin (what a
detector catches, how a backend decodes its model) stays in that plugin's tests.
"""
