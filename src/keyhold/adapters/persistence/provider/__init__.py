"""Persistence of the provider context: providers, connections and their refresh locks."""
