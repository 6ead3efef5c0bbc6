"""Models of the Yangquan smart city."""
