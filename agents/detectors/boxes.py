"""Box arithmetic shared by the backends' post-processing: IoU and non-maximum suppression.

Pure numpy (no cv2) so it runs, and is tested, wherever numpy does. Boxes are
``(x1, y1, x2, y2)`` rows of a float array; any consistent unit works.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["iou", "nms"]

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def iou(box: FloatArray, others: FloatArray) -> npt.NDArray[np.float64]:
    """Intersection over union of one box with each row of ``others``."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0.0, None) * np.clip(y2 - y1, 0.0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0.0, inter / np.where(union > 0.0, union, 1.0), 0.0).astype(np.float64)


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float, *,
        classes: IntArray | None = None, limit: int | None = None) -> IntArray:
    """Indices of the boxes that survive greedy non-maximum suppression, best score first.

    With ``classes`` the suppression is class-aware: a box only suppresses boxes
    of its own class (done by shifting each class into its own coordinate range,
    the usual trick, so one pass serves all classes).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.intp)
    work = boxes.astype(np.float64, copy=True)
    if classes is not None:
        span = float(np.abs(work).max()) + 1.0
        work += (classes.astype(np.float64) * 2.0 * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if limit is not None and len(keep) >= limit:
            break
        rest = order[1:]
        order = rest[iou(work[best], work[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)
