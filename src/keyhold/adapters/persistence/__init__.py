"""SQLAlchemy 2 async persistence: SQLite (embedded default) and PostgreSQL (asyncpg)."""
