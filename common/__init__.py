"""The bottom of the stack: settings, client options, the bounded content loader and the
hardened HTTP server. Imports nothing of Sigstream's own; only the CLI resolves settings
from the environment, everything else takes them as arguments."""
