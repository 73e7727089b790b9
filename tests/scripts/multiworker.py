"""One worker of a 2-worker MultiWorkerMirroredStrategy job (TF_CONFIG from the environment).

usage: multiworker.py BUNDLE_PATH OUT_JSON
Trains a few steps with a custom loop, then every worker calls save_bundle on the same path.
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import faithful_restore as fr  # noqa: E402

path, out = sys.argv[1], sys.argv[2]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
task = json.loads(os.environ["TF_CONFIG"])["task"]
GLOBAL_BATCH = 16
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam(1e-2)

rng = np.random.default_rng(0)
x = rng.normal(size=(128, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True).astype("float32")
dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(GLOBAL_BATCH)
iterator = iter(strategy.experimental_distribute_dataset(dataset))


@tf.function
def train_step(batch):
    def step(inputs):
        xb, yb = inputs
        with tf.GradientTape() as tape:
            per_example = tf.reduce_mean((model(xb, training=True) - yb) ** 2, axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    strategy.run(step, args=(batch,))


for _ in range(3):
    train_step(next(iterator))

before = set(os.listdir(os.path.dirname(path)))
manifest = fr.save_bundle(model, path, optimizer=optimizer, overwrite=True)
digest = hashlib.sha256(b"".join(np.asarray(v).tobytes() for v in model.trainable_variables)).hexdigest()
with open(out, "w") as f:
    json.dump(
        {
            "task": task,
            "chief": strategy.extended.should_checkpoint,
            "digest": digest,
            "iterations": int(np.asarray(optimizer.iterations)),
            "distribution": manifest.distribution,
        },
        f,
    )
print("done", flush=True)
