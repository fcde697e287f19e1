"""The inventory slice: stock per SKU, reserved for an order and released if it fails."""
