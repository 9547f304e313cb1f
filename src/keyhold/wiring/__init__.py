"""The composition root, one module per bounded context: each builds its context's
adapters and use cases through their constructors and returns them as one value.
`keyhold.server` puts the contexts together and runs the process."""
