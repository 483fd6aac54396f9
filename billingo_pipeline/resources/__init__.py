from .billingo import BillingoResource
from .warehouse import WarehouseResource

__all__ = ["BillingoResource", "WarehouseResource"]
