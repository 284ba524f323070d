"""An order saga on celery-durable, and a demo that crashes its worker mid-order.

``python -m example_project`` runs the demo; see ``__main__.py``.
"""
