"""The embedded broker's login check: amqtt's password file, minus revoked users, with every refusal audited.

:class:`AuditedFileAuthPlugin` is amqtt's ``FileAuthPlugin`` (Argon2id hashes
in ``<data_dir>/amqtt-passwd``) with two additions: a user in the broker's
:class:`broker.revocation.RevokedDevices` is refused even while its hash is
still loaded (amqtt reads the password file only at start), and a refused
CONNECT becomes an ``auth_failure`` audit record (reason ``revoked``,
``unknown_user``, ``bad_password`` or ``no_username``). Both objects arrive
through the plugin's configuration, as the ACL does in :mod:`broker.amqtt_acl`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.plugins.authentication import FileAuthPlugin
from amqtt.session import Session

from broker.audit import AuditLog
from broker.revocation import RevokedDevices
from schemas.audit import AuditKind

__all__ = ["AUTH_PLUGIN", "AuditedFileAuthPlugin"]

logger = logging.getLogger(__name__)

AUTH_PLUGIN = f"{__name__}.AuditedFileAuthPlugin"


class AuditedFileAuthPlugin(FileAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's password-file login, refusing revoked users and auditing every refusal."""

    @dataclass
    class Config:
        password_file: str | Path | None = None
        revoked: Any = None
        audit: Any = None
        allow_anonymous: bool = False

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        revoked, audit = self.config.revoked, self.config.audit
        self._revoked = revoked if isinstance(revoked, RevokedDevices) else RevokedDevices(None)
        self._audit = audit if isinstance(audit, AuditLog) else None

    async def authenticate(self, *, session: Session) -> bool | None:
        user = getattr(session, "username", None)
        if user and user in self._revoked:
            self._refused(session, "revoked")
            return False
        result = await super().authenticate(session=session)
        if result is False:
            self._refused(session, "bad_password" if user in self._users else "unknown_user")
        elif result is None and not user and not self.config.allow_anonymous:
            self._refused(session, "no_username")
        return bool(result) if result is not None else None

    def _refused(self, session: Session, reason: str) -> None:
        user = getattr(session, "username", None) or ""
        client_id = getattr(session, "client_id", "") or ""
        logger.info("refused CONNECT of client %r (user %r): %s", client_id, user, reason)
        if self._audit is not None:
            self._audit.record(AuditKind.AUTH_FAILURE, user, reason, f"client_id {client_id}")
