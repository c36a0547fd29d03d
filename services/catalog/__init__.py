"""Programs as managed data: the versions of each program (seeded from ``programs/*.toml``, created by admins
through the API), their batches, and the registry every process reads them from without a restart."""
