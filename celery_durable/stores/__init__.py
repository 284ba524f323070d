"""Journal stores: in memory (one process) and in Redis."""
