"""The running TensorFlow/Keras: which versions are supported, the few private Keras attributes
results depend on (each guarded), Keras' directory format across versions, and variable snapshots.

Depends only on ``errors``; everything above it reaches Keras internals through here.
"""
