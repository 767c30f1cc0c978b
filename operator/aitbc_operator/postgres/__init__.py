"""Everything that talks SQL to a PostgreSQL server (psycopg 3; identifiers and literals via psycopg.sql)."""
