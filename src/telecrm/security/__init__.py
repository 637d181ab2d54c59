"""Field encryption (envelope AES-GCM), blind indexes, key rotation and the hash-chained audit log."""
