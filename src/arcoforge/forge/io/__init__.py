"""Where source bytes come from (fetch: transports, credentials, cache) and how they are read (readers: formats)."""
