"""Access control: API keys, roles and the route policy (docs/security.md)."""
