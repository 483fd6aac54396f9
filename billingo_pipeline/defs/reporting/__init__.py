"""Reports built on the synced invoices: the aging report and what keeps it current."""
