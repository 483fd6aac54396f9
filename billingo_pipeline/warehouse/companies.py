"""Companies (tenants): who is synced, and with which encrypted Billingo key."""

from __future__ import annotations

import datetime as dt
import re
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
) -> Company:
    now = _utcnow()
    with engine.begin() as conn:
        _check_new_company(conn, slug, name)
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


def set_api_key(engine: Engine, slug: str, *, api_key_encrypted: str, api_key_fingerprint: str, key_checked: bool) -> Company:
    get_company(engine, slug)
    now = _utcnow()
    with engine.begin() as conn:
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
