"""Storage adapter: SQLAlchemy 2 Core tables, engine set-up, migrations, repositories."""
