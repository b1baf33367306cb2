"""Command-line interface (typer). Nothing in the library imports this package."""
