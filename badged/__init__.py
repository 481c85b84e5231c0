"""badged: award badges inside PostgreSQL, with triggers reconciled from badge.json."""

__version__ = "0.1.0"
