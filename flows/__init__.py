"""One module per duty: a flow composes tasks and returns a typed report."""
