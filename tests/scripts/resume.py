"""Child process for exact-resume tests: train, save through BundleManager, resume in a fresh process.

usage: resume.py LOOP OPT PHASE STEPS DIR OUT
  LOOP: "ctl" (custom training loop, shuffled tf.data iterator in the bundle's state) or "fit"
        (model.fit with BundleCheckpoint; per-epoch shuffling that is a function of the epoch)
  OPT: "adam" or "sgd" (SGD with momentum)
  PHASE: "full" trains 2*STEPS; "first" trains STEPS and saves; "second" restores and trains STEPS
         more; "weights" restores only weights (save_weights/load_weights) and trains STEPS more
  OUT: an .npz with the final model and optimizer variables
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import faithful_restore as fr  # noqa: E402

LOOP, OPT, PHASE, STEPS, DIR, OUT = sys.argv[1:7]
STEPS = int(STEPS)
N, BATCH = 64, 8
PER_EPOCH = N // BATCH

tf.config.experimental.enable_op_determinism()
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
X = rng.normal(size=(N, 6)).astype("float32")
Y = (X @ rng.normal(size=(6, 2))).astype("float32")


def build():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.3), keras.layers.Dense(2)]
    )
    opt = keras.optimizers.Adam(1e-2) if OPT == "adam" else keras.optimizers.SGD(0.05, momentum=0.9)
    return model, opt


def dump(model, opt):
    arrays = [np.asarray(v) for v in model.variables] + [np.asarray(v) for v in opt.variables]
    np.savez(OUT, *arrays)


def ctl():
    model, opt = build()
    ds = (
        tf.data.Dataset.from_tensor_slices((X, Y))
        .shuffle(N, seed=7, reshuffle_each_iteration=True)
        .repeat()
        .batch(BATCH)
    )
    it = iter(ds)
    step = tf.Variable(0, dtype=tf.int64)
    manager = fr.BundleManager(DIR)
    if PHASE == "second":
        start = manager.restore_or_initialize(model, optimizer=opt, state={"data": it, "step": step})
        assert start == STEPS and int(step) == STEPS, (start, int(step))
    elif PHASE == "weights":
        model.load_weights(os.path.join(DIR, "plain.weights.h5"))
    total = 2 * STEPS if PHASE == "full" else STEPS

    for _ in range(total):
        xb, yb = next(it)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(xb, training=True) - yb) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        step.assign_add(1)
    if PHASE == "first":
        manager.save(model, step=int(step), optimizer=opt, state={"data": it, "step": step})
        model.save_weights(os.path.join(DIR, "plain.weights.h5"))
    dump(model, opt)


def epoch_dataset():
    # Each epoch's order is a pure function of the epoch number, so a resumed fit can skip to it.
    def order(epoch):
        seed = tf.stack([epoch, tf.constant(7, tf.int64)])
        return tf.data.Dataset.range(N).map(lambda i: tf.random.experimental.index_shuffle(i, seed, N - 1))

    indices = tf.data.Dataset.range(1000).flat_map(order)
    return indices.map(lambda j: (tf.gather(X, j), tf.gather(Y, j))).batch(BATCH)


def fit():
    model, opt = build()
    model.compile(opt, "mse")
    epochs = STEPS // PER_EPOCH
    ckpt = fr.keras.BundleCheckpoint(DIR, save_freq="epoch", restore=PHASE == "second")
    start = 0
    if PHASE == "second":
        start = ckpt.manager.newest().step
    elif PHASE == "weights":
        model.load_weights(os.path.join(DIR, "plain.weights.h5"))
        start = epochs
    end = 2 * epochs if PHASE in ("full", "second", "weights") else epochs
    data = epoch_dataset().skip(start * PER_EPOCH)
    model.fit(
        data,
        epochs=end,
        initial_epoch=start,
        steps_per_epoch=PER_EPOCH,
        verbose=0,
        callbacks=[ckpt] if PHASE != "weights" else [],
        shuffle=False,
    )
    if PHASE == "second":
        assert ckpt.initial_epoch == epochs, ckpt.initial_epoch
    if PHASE == "first":
        model.save_weights(os.path.join(DIR, "plain.weights.h5"))
    dump(model, opt)


if __name__ == "__main__":
    ctl() if LOOP == "ctl" else fit()
    print("done", flush=True)
