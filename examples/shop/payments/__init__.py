"""The payments slice: captures (or declines) the payment the checkout saga asks for."""
