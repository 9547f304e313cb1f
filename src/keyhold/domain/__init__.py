"""Entities, value objects, domain errors and ports. Imports no gRPC, protobuf or SQLAlchemy."""
