"""Catalogs in and out, torch-free: one formats table (formats.py), reading (read.py), writing (write.py,
fits_table.py), the metadata a catalog carries (metadata.py) and the text escaping of ids and paths (text.py)."""
