"""The stages every call passes before its handler: request id, authentication,
authorization, rate limiting. Each stage raises a domain error to refuse the call."""
