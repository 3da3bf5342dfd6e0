"""A study database of its own for each namespace: with an administrator's PostgreSQL URL
(`--study-admin-url`, chart `tuning.adminSecretName`), the operator gives every namespace that runs
a parallel study a role and a schema of that role's own, and hands that namespace's Jobs only that
role's URL, in the Secret `kompress-study-database` it writes there. Team B's credentials then
cannot read or change team A's studies: the database says no, whatever a Job does with its URL.

The role's password is derived from the administrator's URL and the namespace (HMAC-SHA256), so
the operator keeps no state: a new administrator password rotates every namespace's at the next
study, and nothing needs reading back from a Secret.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, unquote, urlsplit

SECRET_NAME = "kompress-study-database"
SECRET_KEY = "url"
ROLE_PREFIX = "kompress_"


class StudyDatabaseError(Exception):
    """The administrator's database cannot give a namespace its role: the message names the
    server, never the URL's credentials."""


def role_name(namespace: str) -> str:
    """The namespace's PostgreSQL role (and schema): `kompress_` and the namespace with '_' for '-'
    (one-to-one: namespaces hold no '_'), cut to 63 bytes with a digest of the whole when longer."""
    name = ROLE_PREFIX + namespace.replace("-", "_")
    return name if len(name) <= 63 else f"{name[:54]}_{hashlib.sha256(namespace.encode()).hexdigest()[:8]}"


class StudyDatabases:
    def __init__(self, admin_url: str, connect_timeout: int = 10):
        self.admin_url, self.connect_timeout = admin_url, connect_timeout
        parsed = urlsplit(self._driver_url())
        self.host, self.port, self.database = parsed.hostname or "localhost", parsed.port or 5432, unquote(parsed.path.lstrip("/"))

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def password(self, namespace: str) -> str:
        return hmac.new(self.admin_url.encode(), f"kompress-study:{namespace}".encode(), hashlib.sha256).hexdigest()

    def ensure(self, namespace: str) -> str:
        """The namespace's role and schema, made or brought up to date; returns the URL its Jobs get."""
        import psycopg
        from psycopg import sql

        role, password = role_name(namespace), self.password(namespace)
        ident = sql.Identifier(role)
        try:
            with psycopg.connect(self._driver_url(), autocommit=True, connect_timeout=self.connect_timeout) as connection:
                exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
                # NOINHERIT, no CREATEDB or CREATEROLE: a login for its own schema, nothing else
                connection.execute(sql.SQL("{} ROLE {} WITH LOGIN NOINHERIT NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    verb, ident, sql.Literal(password)))
                database = sql.Identifier(self.database)
                connection.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, ident))
                # a non-superuser administrator must hold the role to give it a schema (PostgreSQL 16)
                connection.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))
                connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(ident, ident))
                connection.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(ident))
                connection.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(ident))
                connection.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(ident, database, ident))
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise StudyDatabaseError(f"cannot give namespace {namespace} its study role at {self.where}: {first}") from None
        return f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}/{quote(self.database, safe='')}"

    def _driver_url(self) -> str:
        """The URL as libpq takes it (SQLAlchemy's postgresql+psycopg:// spelled postgresql://)."""
        return "postgresql://" + self.admin_url.split("://", 1)[1]
