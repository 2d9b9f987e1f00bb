"""The composition root: builds every domain service of one process from its settings.

HTTP applications (registry, token endpoint, management API) and the CLI take what they need
from here, so each service is wired in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from wharf.auth.access import AccessService
from wharf.auth.audit import Audit
from wharf.auth.directory import DirectoryService
from wharf.auth.service import AuthService
from wharf.auth.tokens import TokenService
from wharf.config import Settings
from wharf.management.accounts import AccountService
from wharf.management.repositories import RepositoryService
from wharf.metadata.identity import IdentityStore
from wharf.metadata.store import MetadataStore
from wharf.registry.service import RegistryService
from wharf.settings import Policy
from wharf.storage import StorageDriver, open_storage
from wharf.storage.config import load_credentials, resolve_storage_url


@dataclass
class Services:
    store: MetadataStore
    storage: StorageDriver
    identities: IdentityStore
    policy: Policy
    tokens: TokenService
    audit: Audit
    directory: DirectoryService
    auth: AuthService
    access: AccessService
    registry: RegistryService
    accounts: AccountService
    repositories: RepositoryService

    def close(self) -> None:
        self.store.dispose()


def build_services(settings: Settings) -> Services:
    store = MetadataStore(settings.db_url)
    identities = IdentityStore(store)
    load_credentials(settings.data_dir)
    storage = open_storage(resolve_storage_url(settings, identities))
    policy = Policy(identities)
    tokens = TokenService(identities)
    audit = Audit(identities)
    directory = DirectoryService(store, identities, policy, audit)
    auth = AuthService(store, identities, policy, tokens, audit, directory)
    access = AccessService(store, identities, policy)
    return Services(
        store=store,
        storage=storage,
        identities=identities,
        policy=policy,
        tokens=tokens,
        audit=audit,
        directory=directory,
        auth=auth,
        access=access,
        registry=RegistryService(store, storage),
        accounts=AccountService(store, identities, policy, audit, tokens),
        repositories=RepositoryService(store, identities, policy, access, audit),
    )
