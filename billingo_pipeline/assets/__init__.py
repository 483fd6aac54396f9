from .billingo import billingo_documents_raw, billingo_invoices_and_items

billingo_assets = [billingo_documents_raw, billingo_invoices_and_items]

__all__ = ["billingo_assets", "billingo_documents_raw", "billingo_invoices_and_items"]
