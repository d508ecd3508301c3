"""The Delta Lake: table names, paths and the one module that reads and writes them."""
