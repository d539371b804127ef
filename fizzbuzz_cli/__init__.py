"""fizz: a PostgreSQL-backed task scheduler for the command line."""

__version__ = "0.1.0"
