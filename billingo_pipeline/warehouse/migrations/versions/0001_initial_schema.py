"""initial warehouse schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa

# Custom column types are imported, not copied: they only decide how values are (de)serialized.
from billingo_pipeline.warehouse.schema import ExactDecimal, JsonDocument, UtcDateTime

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('companies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False, comment='Dagster partition key'),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('billingo_sync_enabled', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('api_key_encrypted', sa.Text(), nullable=True, comment='Fernet token, never plaintext'),
    sa.Column('api_key_fingerprint', sa.String(length=32), nullable=True),
    sa.Column('api_key_configured_at', UtcDateTime(), nullable=True),
    sa.Column('api_key_checked_at', UtcDateTime(), nullable=True),
    sa.Column('created_at', UtcDateTime(), nullable=False),
    sa.Column('updated_at', UtcDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_companies')),
    sa.UniqueConstraint('slug', name=op.f('uq_companies_slug'))
    )
    op.create_table('billingo_invoices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.BigInteger(), nullable=False, comment='Billingo document id'),
    sa.Column('invoice_number', sa.String(length=128), nullable=True),
    sa.Column('document_type', sa.String(length=32), nullable=True, comment='Billingo DocumentType, as text'),
    sa.Column('correction_type', sa.String(length=32), nullable=True),
    sa.Column('block_id', sa.BigInteger(), nullable=True),
    sa.Column('cancelled', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('invoice_date', sa.Date(), nullable=True),
    sa.Column('fulfillment_date', sa.Date(), nullable=True),
    sa.Column('due_date', sa.Date(), nullable=True),
    sa.Column('paid_date', sa.Date(), nullable=True),
    sa.Column('currency', sa.String(length=8), nullable=True),
    sa.Column('conversion_rate', ExactDecimal(20, 8), nullable=True),
    sa.Column('net_total', ExactDecimal(20, 6), nullable=True, comment='summary.net_amount'),
    sa.Column('vat_total', ExactDecimal(20, 6), nullable=True, comment='summary.vat_amount'),
    sa.Column('gross_total', ExactDecimal(20, 6), nullable=True, comment='gross_total'),
    sa.Column('net_total_local', ExactDecimal(20, 6), nullable=True, comment='summary.net_amount_local (HUF)'),
    sa.Column('vat_total_local', ExactDecimal(20, 6), nullable=True, comment='summary.vat_amount_local (HUF)'),
    sa.Column('gross_total_local', ExactDecimal(20, 6), nullable=True, comment='summary.gross_amount_local (HUF)'),
    sa.Column('payment_method', sa.String(length=64), nullable=True),
    sa.Column('payment_status', sa.String(length=32), nullable=True),
    sa.Column('rounding', sa.String(length=16), nullable=True, comment='settings.round'),
    sa.Column('language', sa.String(length=8), nullable=True),
    sa.Column('electronic', sa.Boolean(), nullable=True),
    sa.Column('partner_id', sa.BigInteger(), nullable=True),
    sa.Column('partner_name', sa.String(length=255), nullable=True),
    sa.Column('partner_tax_number', sa.String(length=64), nullable=True),
    sa.Column('partner_iban', sa.String(length=64), nullable=True),
    sa.Column('partner_swift', sa.String(length=32), nullable=True),
    sa.Column('partner_account_number', sa.String(length=64), nullable=True),
    sa.Column('partner_country_code', sa.String(length=8), nullable=True),
    sa.Column('partner_post_code', sa.String(length=32), nullable=True),
    sa.Column('partner_city', sa.String(length=128), nullable=True),
    sa.Column('partner_address', sa.String(length=255), nullable=True),
    sa.Column('partner_emails', sa.Text(), nullable=True, comment='comma-separated'),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('source_hash', sa.String(length=64), nullable=False, comment='raw content_hash normalized from'),
    sa.Column('first_seen_at', UtcDateTime(), nullable=False),
    sa.Column('last_changed_at', UtcDateTime(), nullable=False),
    sa.Column('deleted_in_source_at', UtcDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_billingo_invoices_company_id_companies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billingo_invoices')),
    sa.UniqueConstraint('company_id', 'document_id', name=op.f('uq_billingo_invoices_company_id_document_id'))
    )
    op.create_index(op.f('ix_billingo_invoices_company_id_invoice_number'), 'billingo_invoices', ['company_id', 'invoice_number'], unique=False)
    op.create_index(op.f('ix_billingo_invoices_company_id_payment_status_due_date'), 'billingo_invoices', ['company_id', 'payment_status', 'due_date'], unique=False)
    op.create_table('sync_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False, comment='Dagster run id (or cli-<uuid>)'),
    sa.Column('trigger', sa.String(length=32), nullable=False, comment='schedule | manual | backfill | cli | sensor'),
    sa.Column('status', sa.String(length=16), nullable=False, comment='RUNNING | COMPLETED | PARTIAL | FAILED'),
    sa.Column('started_at', UtcDateTime(), nullable=False),
    sa.Column('finished_at', UtcDateTime(), nullable=True),
    sa.Column('duration_seconds', sa.Float(), nullable=True),
    sa.Column('invoices_processed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('invoices_created', sa.Integer(), server_default='0', nullable=False),
    sa.Column('invoices_updated', sa.Integer(), server_default='0', nullable=False),
    sa.Column('invoices_skipped', sa.Integer(), server_default='0', nullable=False),
    sa.Column('invoices_failed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('invoices_marked_deleted', sa.Integer(), server_default='0', nullable=False),
    sa.Column('items_written', sa.Integer(), server_default='0', nullable=False),
    sa.Column('api_calls', sa.Integer(), server_default='0', nullable=False),
    sa.Column('pages_fetched', sa.Integer(), server_default='0', nullable=False),
    sa.Column('documents_fetched', sa.Integer(), server_default='0', nullable=False),
    sa.Column('fetch_complete', sa.Boolean(), nullable=True),
    sa.Column('errors', JsonDocument, nullable=False, comment='[{document_id, message}]'),
    sa.Column('error_message', sa.Text(), nullable=True, comment='why a FAILED sync failed'),
    sa.Column('check_results', JsonDocument, nullable=True, comment='asset-check outcomes'),
    sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_sync_log_company_id_companies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_log')),
    sa.UniqueConstraint('company_id', 'run_id', name=op.f('uq_sync_log_company_id_run_id'))
    )
    op.create_index(op.f('ix_sync_log_company_id_started_at'), 'sync_log', ['company_id', 'started_at'], unique=False)
    op.create_table('billingo_documents_raw',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.BigInteger(), nullable=False, comment='Billingo document id'),
    sa.Column('payload', JsonDocument, nullable=False, comment='the Document object as received'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='normalize.change_hash: canonical JSON, unpaid paid_date ignored'),
    sa.Column('first_fetched_at', UtcDateTime(), nullable=False),
    sa.Column('last_fetched_at', UtcDateTime(), nullable=False),
    sa.Column('last_seen_sync_id', sa.Integer(), nullable=True),
    sa.Column('missing_since', UtcDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['company_id'], ['companies.id'], name=op.f('fk_billingo_documents_raw_company_id_companies')),
    sa.ForeignKeyConstraint(['last_seen_sync_id'], ['sync_log.id'], name=op.f('fk_billingo_documents_raw_last_seen_sync_id_sync_log')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billingo_documents_raw')),
    sa.UniqueConstraint('company_id', 'document_id', name=op.f('uq_billingo_documents_raw_company_id_document_id'))
    )
    op.create_table('billingo_invoice_items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.BigInteger(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False, comment='1-based order on the document'),
    sa.Column('product_id', sa.BigInteger(), nullable=True),
    sa.Column('name', sa.String(length=512), nullable=True),
    sa.Column('quantity', ExactDecimal(20, 6), nullable=True),
    sa.Column('unit', sa.String(length=64), nullable=True),
    sa.Column('net_unit_price', ExactDecimal(20, 6), nullable=True),
    sa.Column('vat_rate', sa.String(length=16), nullable=True, comment='as Billingo writes it: 27%, 5,5%, AAM'),
    sa.Column('vat_percent', ExactDecimal(7, 4), nullable=True, comment='numeric rate; null for AAM etc.'),
    sa.Column('entitlement', sa.String(length=32), nullable=True),
    sa.Column('net_amount', ExactDecimal(20, 6), nullable=True),
    sa.Column('vat_amount', ExactDecimal(20, 6), nullable=True),
    sa.Column('gross_amount', ExactDecimal(20, 6), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['company_id', 'document_id'], ['billingo_invoices.company_id', 'billingo_invoices.document_id'], name=op.f('fk_billingo_invoice_items_company_id_document_id_billingo_invoices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billingo_invoice_items')),
    sa.UniqueConstraint('company_id', 'document_id', 'position', name=op.f('uq_billingo_invoice_items_company_id_document_id_position'))
    )


def downgrade() -> None:
    op.drop_table('billingo_invoice_items')
    op.drop_table('billingo_documents_raw')
    op.drop_index(op.f('ix_sync_log_company_id_started_at'), table_name='sync_log')
    op.drop_table('sync_log')
    op.drop_index(op.f('ix_billingo_invoices_company_id_payment_status_due_date'), table_name='billingo_invoices')
    op.drop_index(op.f('ix_billingo_invoices_company_id_invoice_number'), table_name='billingo_invoices')
    op.drop_table('billingo_invoices')
    op.drop_table('companies')
