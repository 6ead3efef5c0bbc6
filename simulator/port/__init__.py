"""Models of the Shanxi (Yangquan) international inland port."""
