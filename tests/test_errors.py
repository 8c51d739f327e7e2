"""The one exception tree: every public error class lives in schemas/errors.py and is in its map."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sqlite3

import pytest

import schemas.errors as errors
from schemas.errors import ConfigError, EdgebusError, OutboxError, StorageError, converted

PACKAGES = ("schemas", "protocols", "broker", "agents", "coordinator", "firmware_tools")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
            if ".migrations" in info.name:
                continue  # Alembic's env.py runs only inside Alembic
            names.append(info.name)
    return names


def test_every_public_error_class_is_defined_in_schemas_errors() -> None:
    stray = []
    for name in _modules():
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # an optional extra (ultralytics, river) that this machine lacks
        for attr, obj in vars(module).items():
            if (name != "schemas.errors" and inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == name
                    and not attr.startswith("_")):
                stray.append(f"{name}.{attr}")
    assert stray == [], f"error classes outside schemas/errors.py: {stray}"


def test_every_error_derives_from_edgebus_error_and_is_in_the_documented_tree() -> None:
    classes = [obj for obj in vars(errors).values()
               if inspect.isclass(obj) and issubclass(obj, BaseException)]
    assert len(classes) > 20
    doc = errors.__doc__ or ""
    for cls in classes:
        assert issubclass(cls, EdgebusError), cls
        assert f" {cls.__name__} " in doc or f" {cls.__name__}\n" in doc, f"{cls.__name__} not in the tree"
        assert cls.__name__ in errors.__all__


def test_converted_chains_the_cause_and_lets_edgebus_errors_through() -> None:
    with (pytest.raises(StorageError, match="cannot write log: disk I/O error") as caught,
          converted(StorageError, "cannot write log", sqlite3.Error)):
        raise sqlite3.OperationalError("disk I/O error")
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(ConfigError, match=r"^bad key$"), converted(OutboxError, "outbox", ValueError):
        raise ConfigError("bad key")  # a ValueError too, but already an edgebus error
    with pytest.raises(KeyError), converted(OutboxError, "outbox", sqlite3.Error):
        raise KeyError("not one of the causes")
