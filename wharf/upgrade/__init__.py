"""Upgrades: the version rules (`versions`), the release history (`history`) and the engine
that moves a cluster's metadata from one release to the next (`engine`)."""
