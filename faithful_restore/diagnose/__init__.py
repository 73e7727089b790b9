"""Verdicts: ``compare`` (stored state bitwise in ``stored``, computed results against a noise floor
in ``computed``), ``verify_bundle`` and ``assert_roundtrip`` (``verify``), one training step on
copies (``training_step``) and input checks and synthesized batches (``inputs``).
"""
