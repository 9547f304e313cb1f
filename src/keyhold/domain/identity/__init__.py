"""Identity: users, passwords, sessions, one-time tokens and login lockout."""

DOMAIN = "keyhold.identity"
