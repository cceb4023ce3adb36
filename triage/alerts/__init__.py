"""Alert routing and delivery: findings in Elasticsearch -> routes -> destinations.

Pure core (``kinds``, ``config``, ``routing``, ``throttle``, ``render``, ``ocsf``) and I/O
at the edges (``follower`` reads findings, ``deliverylog`` records each delivery once,
``destinations`` send, ``runner`` ties them together beside the detection job)."""
