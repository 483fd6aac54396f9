"""Companies (tenants): who is synced, and with which encrypted Billingo key."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .schema import companies

# Slugs become Dagster partition keys and CLI arguments: keep them boring.
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class CompanyError(Exception):
    """A company operation cannot be done; the message says why, in one line."""


class UnknownCompanyError(CompanyError):
    pass


class CompanyNotSyncableError(CompanyError):
    pass


@dataclass(frozen=True)
class Company:
    id: int
    slug: str
    name: str
    billingo_sync_enabled: bool
    is_active: bool
    api_key_fingerprint: str | None
    api_key_configured_at: dt.datetime | None
    api_key_checked_at: dt.datetime | None
    # The Fernet token: not secret on its own, but kept out of reprs and listings anyway.
    api_key_encrypted: str | None = field(default=None, repr=False)

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)

    @property
    def sync_allowed(self) -> bool:
        return self.billingo_sync_enabled and self.is_active

    def require_syncable(self) -> None:
        if not self.is_active:
            raise CompanyNotSyncableError(f"company '{self.slug}' is inactive: not synced.")
        if not self.billingo_sync_enabled:
            raise CompanyNotSyncableError(
                f"company '{self.slug}' has the BILLINGO_SYNC feature flag off: not synced "
                f"(enable it with `billingo-pipeline company update {self.slug} --enable`)."
            )
        if not self.has_api_key:
            raise CompanyNotSyncableError(f"company '{self.slug}' has no Billingo API key configured.")


# Called with the open transaction of a key write; raises to refuse it.
KeyGuard = Callable[[Connection], None]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def validate_slug(slug: str) -> str:
    if not SLUG_PATTERN.match(slug or ""):
        raise CompanyError(
            f"invalid company slug {slug!r}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit."
        )
    return slug


def _from_row(row) -> Company:
    return Company(
        id=row.id,
        slug=row.slug,
        name=row.name,
        billingo_sync_enabled=bool(row.billingo_sync_enabled),
        is_active=bool(row.is_active),
        api_key_fingerprint=row.api_key_fingerprint,
        api_key_configured_at=row.api_key_configured_at,
        api_key_checked_at=row.api_key_checked_at,
        api_key_encrypted=row.api_key_encrypted,
    )


def get_company(engine: Engine, slug: str) -> Company:
    with engine.connect() as conn:
        row = conn.execute(sa.select(companies).where(companies.c.slug == slug)).first()
    if row is None:
        raise UnknownCompanyError(f"unknown company '{slug}' (see `billingo-pipeline company list`).")
    return _from_row(row)


def list_companies(engine: Engine) -> list[Company]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(companies).order_by(companies.c.slug)).all()
    return [_from_row(row) for row in rows]


def syncable_company_slugs(engine: Engine) -> list[str]:
    """Companies the scheduler should sync: flag on, active, key configured."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(companies.c.slug)
                .where(
                    companies.c.billingo_sync_enabled.is_(True),
                    companies.c.is_active.is_(True),
                    companies.c.api_key_encrypted.is_not(None),
                )
                .order_by(companies.c.slug)
            ).scalars()
        )


def _check_new_company(conn: Connection, slug: str, name: str) -> None:
    validate_slug(slug)
    if not (name or "").strip():
        raise CompanyError("company name must not be empty.")
    if conn.execute(sa.select(companies.c.id).where(companies.c.slug == slug)).first():
        raise CompanyError(f"company '{slug}' already exists (use `company update` or `company rotate-key`).")


def check_new_company(engine: Engine, slug: str, name: str) -> None:
    """Raise what ``add_company`` would, before anything slow (a live key check) is done."""
    with engine.connect() as conn:
        _check_new_company(conn, slug, name)


def add_company(
    engine: Engine,
    slug: str,
    name: str,
    *,
    api_key_encrypted: str | None = None,
    api_key_fingerprint: str | None = None,
    billingo_sync_enabled: bool = True,
    is_active: bool = True,
    key_checked: bool = False,
    key_guard: KeyGuard | None = None,
) -> Company:
    """``key_guard`` runs in the insert's transaction, after ``lock_for_key_change``: what it checks
    against the stored keys still holds when the row is written."""
    now = _utcnow()
    with engine.begin() as conn:
        _check_new_company(conn, slug, name)
        if key_guard is not None:
            lock_for_key_change(conn)
            key_guard(conn)
        conn.execute(
            companies.insert().values(
                slug=slug,
                name=name.strip(),
                billingo_sync_enabled=billingo_sync_enabled,
                is_active=is_active,
                api_key_encrypted=api_key_encrypted,
                api_key_fingerprint=api_key_fingerprint,
                api_key_configured_at=now if api_key_encrypted else None,
                api_key_checked_at=now if key_checked else None,
                created_at=now,
                updated_at=now,
            )
        )
    return get_company(engine, slug)


def update_company(
    engine: Engine,
    slug: str,
    *,
    name: str | None = None,
    billingo_sync_enabled: bool | None = None,
    is_active: bool | None = None,
) -> Company:
    values: dict[str, object] = {}
    if name is not None:
        if not name.strip():
            raise CompanyError("company name must not be empty.")
        values["name"] = name.strip()
    if billingo_sync_enabled is not None:
        values["billingo_sync_enabled"] = billingo_sync_enabled
    if is_active is not None:
        values["is_active"] = is_active
    get_company(engine, slug)  # unknown company -> clear error
    if values:
        values["updated_at"] = _utcnow()
        with engine.begin() as conn:
            conn.execute(companies.update().where(companies.c.slug == slug).values(**values))
    return get_company(engine, slug)


def set_api_key(
    engine: Engine,
    slug: str,
    *,
    api_key_encrypted: str,
    api_key_fingerprint: str,
    key_checked: bool,
    key_guard: KeyGuard | None = None,
) -> Company:
    get_company(engine, slug)
    now = _utcnow()
    with engine.begin() as conn:
        if key_guard is not None:
            lock_for_key_change(conn)
            key_guard(conn)
        conn.execute(
            companies.update()
            .where(companies.c.slug == slug)
            .values(
                api_key_encrypted=api_key_encrypted,
                api_key_fingerprint=api_key_fingerprint,
                api_key_configured_at=now,
                api_key_checked_at=now if key_checked else None,
                updated_at=now,
            )
        )
    return get_company(engine, slug)


def mark_key_checked(engine: Engine, slug: str) -> None:
    with engine.begin() as conn:
        conn.execute(companies.update().where(companies.c.slug == slug).values(api_key_checked_at=_utcnow()))


def lock_for_key_change(conn: Connection) -> None:
    """Serialize writers of company keys (readers go on): two `company add` runs with one key at
    the same time cannot both see "not in use yet". SQLite lets one writer in at a time anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("LOCK TABLE companies IN SHARE ROW EXCLUSIVE MODE"))


def companies_with_keys(conn: Connection) -> list[Company]:
    rows = conn.execute(
        sa.select(companies).where(companies.c.api_key_encrypted.is_not(None)).order_by(companies.c.slug)
    ).all()
    return [_from_row(row) for row in rows]


def reencrypt_api_keys(engine: Engine, reencrypt: Callable[[str, str], str]) -> tuple[int, int]:
    """Replace every stored token with ``reencrypt(slug, token)`` in one transaction.

    Rows are written one by one as they are re-encrypted; when ``reencrypt`` raises for any
    company the transaction is rolled back, so either every key moved or none did. Returns
    (companies re-encrypted, companies without a key).
    """
    now = _utcnow()
    with engine.begin() as conn:
        lock_for_key_change(conn)
        rows = conn.execute(
            sa.select(companies.c.id, companies.c.slug, companies.c.api_key_encrypted).order_by(companies.c.slug)
        ).all()
        rotated = 0
        for row in rows:
            if not row.api_key_encrypted:
                continue
            conn.execute(
                companies.update()
                .where(companies.c.id == row.id)
                .values(api_key_encrypted=reencrypt(row.slug, row.api_key_encrypted), updated_at=now)
            )
            rotated += 1
    return rotated, len(rows) - rotated


# --- Readers (PostgreSQL only; migration 0005 creates the role, the policies and the mapping) ---

READER_GROUP_ROLE = "billingo_reader"
READER_MAPPING_TABLE = "billingo_access.company_reader_roles"
# Unquoted-identifier shape: the role name is typed by analysts into connection strings.
READER_ROLE_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{2,62}$")


@dataclass(frozen=True)
class ReaderGrant:
    role: str
    created: bool
    password_set: bool
    company_slugs: tuple[str, ...]


def _scram_verifier(conn: Connection, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password``, computed by libpq on this side: the server,
    its statement log and any error only ever see the verifier, never the password."""
    dbapi_connection = conn.connection.dbapi_connection
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is not None:  # psycopg 3
        verifier = pgconn.encrypt_password(password.encode("utf-8"), role.encode("utf-8"), b"scram-sha-256")
        return verifier.decode("ascii")
    from psycopg2.extensions import encrypt_password  # psycopg2

    return encrypt_password(password, role, dbapi_connection, "scram-sha-256")


def grant_reader(engine: Engine, slug: str, role: str, password: str | None) -> ReaderGrant:
    """Create (or reuse) the LOGIN role ``role``, make it a member of ``billingo_reader`` and map
    it to company ``slug``, in one transaction. ``password=None`` leaves the password as it is (no
    password for a new role: pg_hba then decides, e.g. peer or cert)."""
    if engine.dialect.name != "postgresql":
        raise CompanyError(
            "reader roles exist on PostgreSQL only: SQLite is embedded and single-user, its isolation is the application's."
        )
    if not READER_ROLE_PATTERN.match(role or "") or role.startswith("pg_") or role == READER_GROUP_ROLE:
        raise CompanyError(
            f"invalid reader role name {role!r}: use 3-63 lowercase letters, digits or '_', starting with a letter "
            f"or '_', not 'pg_…' and not '{READER_GROUP_ROLE}' itself."
        )
    company = get_company(engine, slug)
    quoted = engine.dialect.identifier_preparer.quote(role)
    try:
        with engine.begin() as conn:
            if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": READER_MAPPING_TABLE}).scalar() is None:
                raise CompanyError("the warehouse has no reader mapping table: it is not migrated to revision 0005.")
            existing = conn.execute(
                sa.text(
                    "SELECT r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb AS powerful, "
                    "pg_has_role(r.oid, :group, 'MEMBER') AS is_reader, r.rolname = current_user AS is_me "
                    "FROM pg_roles r WHERE r.rolname = :role"
                ),
                {"role": role, "group": READER_GROUP_ROLE},
            ).first()
            created = existing is None
            if created:
                conn.execute(sa.text(f"CREATE ROLE {quoted} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT"))
            elif existing.powerful or existing.is_me or not existing.is_reader:
                # Mapping a role that can bypass row-level security, or one with other grants,
                # would hand a company's data to whoever holds it for other reasons.
                raise CompanyError(
                    f"role '{role}' already exists and is not a plain billingo reader: choose a new role name."
                )
            if password is not None:
                verifier = _scram_verifier(conn, role, password)
                # A verifier is base64 and '$:' only; checked so it can be written as a literal.
                if not re.fullmatch(r"[A-Za-z0-9+/=$:-]+", verifier):
                    raise CompanyError("could not prepare the reader's password verifier.")
                # Driver-level: a verifier holds ':' that a text() construct would take for parameters.
                conn.exec_driver_sql(f"ALTER ROLE {quoted} PASSWORD '{verifier}'")
            conn.execute(sa.text(f"GRANT {READER_GROUP_ROLE} TO {quoted}"))
            conn.execute(
                sa.text(
                    f"INSERT INTO {READER_MAPPING_TABLE} (role_name, company_id) VALUES (:role, :company_id) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"role": role, "company_id": company.id},
            )
            slugs = conn.execute(
                sa.text(
                    f"SELECT c.slug FROM {READER_MAPPING_TABLE} m JOIN companies c ON c.id = m.company_id "
                    "WHERE m.role_name = :role ORDER BY c.slug"
                ),
                {"role": role},
            ).scalars().all()
    except sa.exc.StatementError as exc:
        # The statement (it may hold the verifier) stays out of the message: only the server's reason.
        diag = getattr(exc.orig, "diag", None)
        reason = (diag.message_primary if diag is not None else None) or type(exc.orig).__name__
        raise CompanyError(f"cannot grant reader role '{role}' for company '{slug}': {reason}") from None
    return ReaderGrant(role=role, created=created, password_set=password is not None, company_slugs=tuple(slugs))
