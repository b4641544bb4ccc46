"""Serving on the Open Inference Protocol (KServe v2 REST): `python -m dispatch serve MODEL`.

protocol.py (tensors in and out), app.py (routes, models), metrics.py (Prometheus), batching.py (dynamic
batching), cli.py (arguments, uvicorn, SIGTERM). Needs the `serve` extra: pip install -e '.[serve]'.
"""
