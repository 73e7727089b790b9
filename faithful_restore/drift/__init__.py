"""Training-data statistics and the checks of serving inputs against them. NumPy only.

``stats`` builds :class:`PreprocessingStats` in one streaming pass (``batches`` reads the data,
``sketches`` summarizes it, ``schema`` is the JSON form); ``shapes`` checks a batch's structure and
dtypes against a recorded signature; ``guard`` runs the statistical tests.
"""
