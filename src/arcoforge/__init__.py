"""arcoforge: archival Earth-science files to ARCO stores and ML batches."""
__version__ = "0.1.0"
