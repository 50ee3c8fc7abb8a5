"""Services: thin transactions over the core and the repository."""
