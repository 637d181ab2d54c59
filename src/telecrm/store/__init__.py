"""Storage: the shared SQLAlchemy metadata, engines for SQLite and PostgreSQL, migrations."""
