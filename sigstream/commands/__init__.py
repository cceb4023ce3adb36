"""The sub-commands of ``sigstream``, one module per command group; each defines a
``typer.Typer`` named ``app`` that ``sigstream.cli`` (the composition root) mounts."""
