"""ORM models of the credit domain (filled in by the credit issue)."""
