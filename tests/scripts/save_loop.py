"""Child process for crash and concurrency tests: saves bundles of two known models to one path.

usage: save_loop.py PATH DIGESTS_JSON MODE [COUNT]
  MODE "loop": save A, B, A, ... with overwrite=True forever (until killed), printing "saved N".
  MODE "once-a" / "once-b": save A or B once with overwrite from env FR_OVERWRITE ("1"/"0");
  prints "ok" or "error: <message>".
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import faithful_restore as fr  # noqa: E402


def build(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(256), keras.layers.Dense(8)])
    model.compile("adam", "mse")
    model.train_on_batch(np.ones((4, 32), "float32"), np.ones((4, 8), "float32"))
    return model


def digest(model: keras.Model) -> str:
    h = hashlib.sha256()
    for v in model.trainable_variables:
        h.update(np.asarray(v).tobytes())
    return h.hexdigest()


def main() -> None:
    path, digests_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    models = {"a": build(1), "b": build(2)}
    with open(digests_path + ".tmp", "w") as f:
        json.dump({k: digest(m) for k, m in models.items()}, f)
    os.replace(digests_path + ".tmp", digests_path)
    if mode == "loop":
        print("ready", flush=True)
        i = 0
        while True:
            fr.save_bundle(models["ab"[i % 2]], path, overwrite=True)
            i += 1
            print(f"saved {i}", flush=True)
    else:
        try:
            fr.save_bundle(models[mode[-1]], path, overwrite=os.environ.get("FR_OVERWRITE") == "1")
            print("ok", flush=True)
        except fr.BundleError as e:
            print(f"error: {e}", flush=True)


if __name__ == "__main__":
    main()
