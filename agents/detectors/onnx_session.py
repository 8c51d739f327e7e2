"""Opening an ONNX model with onnxruntime the way every edgebus backend wants it.

One place decides the threading (a fixed intra-op pool, no inter-op pool: an
edge box runs one frame at a time and shares its cores with the agent) and turns
onnxruntime's failures into :class:`ConfigError` naming the model file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError

__all__ = ["metadata", "open_session"]

logger = logging.getLogger(__name__)


def open_session(where: str, path: Path, threads: int) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for ``path`` with ``threads`` intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(f"{where}: onnxruntime is not installed; pip install 'edgebus[camera]'") from exc
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.log_severity_level = 3  # errors only: its warnings are about graph fusions
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable files
        raise ConfigError(f"{where}: cannot load model {str(path)!r}: {exc}") from exc
    logger.info("%s: loaded %s (%d threads)", where, path, threads)
    return session


def metadata(session: Any) -> dict[str, str]:
    """The model's metadata properties (Ultralytics stores class names under ``names``)."""
    props = session.get_modelmeta().custom_metadata_map
    return {str(key): str(value) for key, value in props.items()}
