"""Signed rule bundles and the deployment store the running detection job follows.

``bundle`` builds and verifies bundles, ``signing`` holds the Ed25519 keys, ``store`` is the
on-disk deployment state (current bundle, rollback stack, per-rule modes, generation) and
``watcher`` is what the streaming job polls between micro-batches.
"""
