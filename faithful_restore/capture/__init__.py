"""What a bundle records about a live model, and how each record is put back: architecture,
signature, environment, optimizer, preprocessing state, probe, random state, distribution, and
the safety scan of a config before Keras deserializes it.
"""
