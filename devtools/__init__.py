"""Development tools: what runs the service on one machine and feeds it data, never the service itself.

`devstack` is `giantflow dev` (`make run`'s supervisor, and the embedded PostgreSQL the tests use),
`banksim` the partner-bank simulator (`giantflow bank-sim`), `seeding` the valid data that tests and
`bench/` build on. Nothing under `services/` or `workflows/` imports this package, but the CLI's `dev` and
`bank-sim` commands, lazily.
"""
