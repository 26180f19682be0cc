"""The shared core every layer may use: settings, clients, retry policy, redaction, reporting and the
duty decorator and registry. It imports nothing above it."""
