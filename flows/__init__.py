"""One module per duty, named after it (`cache-warming` -> `flows/cache_warming.py`): a flow declared
with `@duty` that reads as the duty's steps and returns its typed report."""
