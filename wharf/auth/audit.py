"""The audit trail of security-relevant events, queryable by admins at /api/v0/audit.

Recorded: logins and failed logins, token creation, use and removal, account and team
changes, grants, settings changes and repository deletion. A failure to record is logged and
never fails the request that caused it.
"""

from __future__ import annotations

import logging
from typing import Any

from wharf.faults import log_failure
from wharf.metadata.identity import IdentityStore

log = logging.getLogger("wharf.audit")


class Audit:
    def __init__(self, identities: IdentityStore) -> None:
        self.identities = identities

    def record(
        self,
        action: str,
        target: str,
        *,
        actor: str | None,
        client: str | None = None,
        success: bool = True,
        details: dict[str, Any] | None = None,
    ) -> None:
        try:
            self.identities.add_event(
                action, target, actor=actor, client=client, success=success, details=details
            )
        except Exception as e:
            log_failure(log, f"could not record audit event {action} on {target}", e)
