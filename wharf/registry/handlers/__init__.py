"""HTTP handlers of the registry API, one module per resource; thin over RegistryService."""
