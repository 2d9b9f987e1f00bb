"""Authorisation: what a caller may do to a repository.

Levels, lowest to highest: read-only (pull, browse), read-write (plus push, delete tags and
manifests), admin (plus visibility, descriptions, grants, repository deletion). A caller's
level on a repository is the highest of:
  - admin for system admins, for a user in their own namespace, for an organisation's owners;
  - team grants on the repository and on its organisation's whole namespace;
  - read-only on a public repository (for anonymous callers only while `anonymousPull` is on).
Creating a repository by pushing needs `createRepositoryOnPush` and admin on the namespace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from wharf.auth.identity import Identity
from wharf.auth.tokens import Scope
from wharf.metadata.identity import IdentityStore
from wharf.metadata.models import Repository
from wharf.metadata.store import MetadataStore
from wharf.registry.errors import RegistryError
from wharf.registry.names import validate_name
from wharf.settings import Policy

NONE, READ, WRITE, ADMIN = 0, 1, 2, 3
LEVEL_NAMES = {READ: "read-only", WRITE: "read-write", ADMIN: "admin"}
LEVELS = {name: level for level, name in LEVEL_NAMES.items()}

PULL, PUSH, DELETE = "pull", "push", "delete"
ALL_ACTIONS = frozenset({PULL, PUSH, DELETE})
_ACTIONS_AT = {
    NONE: frozenset(),
    READ: frozenset({PULL}),
    WRITE: ALL_ACTIONS,
    ADMIN: ALL_ACTIONS,
}


def level_name(level: int) -> str | None:
    return LEVEL_NAMES.get(level)


def namespace_of(repository: str) -> str:
    return repository.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class Decision:
    level: int
    exists: bool
    actions: frozenset[str]


class AccessService:
    CACHE_SECONDS = 2.0
    CACHE_MAX = 20_000

    def __init__(self, store: MetadataStore, identities: IdentityStore, policy: Policy) -> None:
        self.store = store
        self.identities = identities
        self.policy = policy
        self._cache: dict[tuple[str | None, str], tuple[Decision, float, str]] = {}

    def level(self, identity: Identity, name: str, repo: Repository | None) -> int:
        """The caller's level on repository `name` (`repo` is its row, None if it does not
        exist yet: then only namespace-wide levels count)."""
        if identity.is_admin:
            return ADMIN
        namespace = namespace_of(name)
        best = NONE
        if identity.username is not None:
            if identity.username == namespace:
                return ADMIN
            owner = self.identities.get_account(namespace)
            if owner is not None and owner.is_org and identity.user_id is not None:
                levels = self.identities.granted_levels(
                    identity.user_id, owner.id, repo.id if repo else None
                )
                best = max((LEVELS.get(lv, NONE) for lv in levels), default=NONE)
        public = best < READ and repo is not None and repo.is_public
        if public and (identity.username is not None or self.policy.settings().anonymousPull):
            best = READ
        return best

    def decide(self, identity: Identity, name: str) -> Decision:
        """Level and allowed registry actions on `name`, cached for a moment per caller."""
        key = (identity.username, name)
        epoch = self.policy.epoch()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now and hit[2] == epoch:
            return hit[0]
        repo = self.store.get_repository(name)
        level = self.level(identity, name, repo)
        if repo is not None:
            actions = _ACTIONS_AT[level]
        elif level >= ADMIN and self.policy.settings().createRepositoryOnPush:
            actions = ALL_ACTIONS  # a push will create it
        else:
            actions = frozenset()
        decision = Decision(level, repo is not None, actions)
        if repo is None:
            return decision  # not cached: a push or the API may create it the next moment
        if len(self._cache) >= self.CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (decision, now + self.CACHE_SECONDS, epoch)
        return decision

    def actions(self, identity: Identity, name: str) -> frozenset[str]:
        return self.decide(identity, name).actions

    def can_read(self, identity: Identity, name: str) -> bool:
        return PULL in self.actions(identity, name)

    def readable(
        self,
        identity: Identity,
        last: str | None,
        limit: int | None,
        namespace: str | None = None,
        start: str | None = None,
    ) -> list[tuple[str, str]]:
        """(name, visibility) of the repositories the caller may read, in name order."""
        return self.identities.readable_repositories(
            user_id=identity.user_id,
            username=identity.username,
            is_admin=identity.is_admin,
            include_public=identity.username is not None or self.policy.settings().anonymousPull,
            last=last,
            limit=limit,
            namespace=namespace,
            start=start,
        )

    def grant(self, identity: Identity, scopes: list[Scope]) -> list[dict[str, object]]:
        """The `access` claim for a token request: each requested scope reduced to the
        actions the caller holds. Nothing reveals whether an unreadable repository exists:
        it is granted nothing, exactly like a missing one."""
        granted: list[dict[str, object]] = []
        for scope in scopes:
            if scope.type == "repository":
                try:
                    validate_name(scope.name)
                except RegistryError:
                    continue
                held = self.actions(identity, scope.name)
                wanted = ALL_ACTIONS if "*" in scope.actions else set(scope.actions)
                actions = sorted(held & wanted)
            elif scope.type == "registry" and scope.name == "catalog":
                anonymous_ok = self.policy.settings().anonymousPull
                allowed = identity.username is not None or anonymous_ok
                actions = ["*"] if allowed and "*" in scope.actions else []
            else:
                continue
            granted.append({"type": scope.type, "name": scope.name, "actions": actions})
        return granted
