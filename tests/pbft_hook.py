"""A quarantine hook for the real-process tests (``--on-quarantine tests.pbft_hook:record``).

Appends one JSON line per call to the file named by ``EDGEBUS_TEST_QUARANTINE_LOG``.
"""

from __future__ import annotations

import json
import os

from protocols.pbft import Evidence, encode_frame


def record(replica_id: str, evidence: Evidence) -> None:
    with open(os.environ["EDGEBUS_TEST_QUARANTINE_LOG"], "a") as f:
        f.write(json.dumps({"offender": replica_id, "pid": os.getpid(),
                            "evidence": encode_frame(evidence).hex()}) + "\n")
