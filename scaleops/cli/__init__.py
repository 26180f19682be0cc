"""The `scaleops` command line: `app.py` holds the app, `console.py` its one console, and each other
module one command group."""
