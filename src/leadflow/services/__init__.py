"""Use cases: each ties the pure core and storage together in one transaction."""
