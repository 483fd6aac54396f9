from setuptools import find_packages, setup

# The Dagster set is pinned together: dagster-postgres 0.29.27 is the newest on the registry and
# needs dagster 1.13.27 exactly; an unpinned install silently resolves an ancient dagster-postgres.
# dagster-dg-cli gives `dg dev` / `dg check defs` / `dg list defs` for the defs/ layout
# (pyproject.toml's [tool.dg]); pinned to the same release, since an unpinned one would pull a
# newer dagster-dg-core/dagster-shared than the dagster it drives.
DAGSTER_PINS = [
    "dagster==1.13.27",
    "dagster-webserver==1.13.27",
    "dagster-postgres==0.29.27",
    "dagster-dg-cli==1.13.27",
]

setup(
    name="billingo-pipeline",
    version="0.1.0",
    description="Dagster code location that syncs Billingo (API v3) invoices into a SQL warehouse.",
    packages=find_packages(exclude=["billingo_pipeline_tests", "billingo_pipeline_tests.*"]),
    package_data={"billingo_pipeline": ["warehouse/migrations/*.py", "warehouse/migrations/versions/*.py"]},
    python_requires=">=3.10",
    install_requires=[
        *DAGSTER_PINS,
        "requests>=2.31",
        # Billingo's pages parsed ~3x faster than the stdlib (the sync is bound by one core's
        # Python); the stdlib still reads what orjson refuses or would read differently.
        "orjson>=3.9",
        "pandas>=2.1",
        "sqlalchemy>=2.0,<2.2",
        # Schema changes after the first release must not need a hand-written ALTER per dialect.
        "alembic>=1.13",
        # psycopg 3: SQLAlchemy's `postgresql+psycopg` dialect for the warehouse.
        "psycopg[binary]>=3.1",
        "cryptography>=42",
        "click>=8.1",
        # The CLI's tables fit the terminal's width, health is in colour and a long sync has a
        # progress bar; plain text when not a terminal. Dagster depends on it already.
        "rich>=13.7",
        # The CLI reads the .env `make demo` writes with the parser Dagster uses for the same file
        # (quoting, comments, `export`), so the two never read one file differently.
        "python-dotenv>=1.0",
        # Excel export of invoice queries (`billingo-pipeline invoices --format xlsx`).
        "openpyxl>=3.1",
    ],
    extras_require={
        # `make bench`: dlt's rest_api source into SQLite/PostgreSQL is the comparison the engine must beat.
        "bench": ["dlt[sqlalchemy]==1.31.0"],
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            # Validates the simulator's and the client's traffic against the published OpenAPI spec.
            "openapi-core>=0.19",
            # A real SMTP server on 127.0.0.1 for the failure-alert tests.
            "aiosmtpd>=1.4",
            # Drives Debian's /usr/bin/chromium for the UI test (`make test` installs chromium;
            # never `playwright install`: no browser download).
            "playwright>=1.45",
        ],
    },
    entry_points={
        "console_scripts": ["billingo-pipeline=billingo_pipeline.cli:main"],
    },
)
