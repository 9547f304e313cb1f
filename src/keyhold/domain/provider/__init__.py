"""Provider connections: the catalog of external providers and users' links to them."""

DOMAIN = "keyhold.provider"
