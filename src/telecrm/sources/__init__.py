"""Database sources: read the platform's own PostgreSQL through declarative SQL models."""
