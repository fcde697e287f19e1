"""The payments slice: captures the payment of each placed order."""
