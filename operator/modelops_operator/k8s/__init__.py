"""The only code that talks to the API server: reading observed state, applying plans."""
