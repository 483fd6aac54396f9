from .alerts import AlertChannelsResource
from .billingo import BillingoResource
from .fernet import FernetKeyResource
from .warehouse import WarehouseResource

__all__ = ["AlertChannelsResource", "BillingoResource", "FernetKeyResource", "WarehouseResource"]
