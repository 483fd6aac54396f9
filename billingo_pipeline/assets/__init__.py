from .billingo import billingo_sync

billingo_assets = [billingo_sync]

__all__ = ["billingo_assets", "billingo_sync"]
