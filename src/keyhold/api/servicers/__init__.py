"""Servicers: proto messages in, use cases called, proto messages out. A method not
overridden here falls through to the generated base class and answers UNIMPLEMENTED."""
