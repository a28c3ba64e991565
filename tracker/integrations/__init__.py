"""Callbacks that measure a framework's training with a ``Tracker``, one module per framework.

``tracker.integrations.lightning``, ``.transformers`` and ``.keras`` each import their framework
when they are imported, and only then: ``import tracker`` never imports a framework.
"""
