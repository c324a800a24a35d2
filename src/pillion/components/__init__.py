"""Components behind small interfaces, registered by Dapr type name (``state.lmdb``)."""
