"""Models nobody here wrote: KerasHub backbones, tasks and tokenizers built from their constructors.

Tiny configs, random weights, offline (never ``from_preset``). Each builder returns
``(model, inputs, targets, train_inputs)``: the model is compiled and has taken one training step,
so it carries optimizer state; ``inputs`` are what ``model(inputs)`` takes, ``targets`` match its
outputs, and ``train_inputs`` are what ``fit``/``train_on_batch`` take (raw strings for a task
whose preprocessor runs there).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]
GPT2_VOCAB = {"<|endoftext|>": 0, "Ġ": 1, "a": 2, "b": 3, "ab": 4, "Ġa": 5, "Ġab": 6, "c": 7}
GPT2_MERGES = ["a b", "Ġ a", "Ġa b"]


def _hub():
    import keras_hub

    return keras_hub


def _tokens(batch: int = 2, seq: int = 8, vocab: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "token_ids": rng.integers(1, vocab, size=(batch, seq)).astype("int32"),
        "padding_mask": np.ones((batch, seq), "int32"),
    }


def _finish(model: keras.Model, x, loss="mse"):
    """Compiles with Adam, takes one step on seeded targets shaped like the outputs."""
    outputs = model(x) if not isinstance(x, np.ndarray) or x.dtype.kind != "U" else model.predict(x, verbose=0)
    y = tf.nest.map_structure(lambda t: np.full(np.shape(t), 0.1, np.float32), outputs)
    if isinstance(outputs, dict):
        loss = {k: loss for k in outputs}
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    model.train_on_batch(x, y)
    return model, x, y, x


def bert():
    hub = _hub()
    model = hub.models.BertBackbone(
        vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    return _finish(model, {**_tokens(), "segment_ids": np.zeros((2, 8), "int32")})


def llama():  # decoder-only LLM: grouped-query attention and RoPE
    hub = _hub()
    model = hub.models.LlamaBackbone(
        vocabulary_size=40, num_layers=2, num_query_heads=4, hidden_dim=16, intermediate_dim=32, num_key_value_heads=2
    )
    return _finish(model, _tokens())


def gemma():
    hub = _hub()
    model = hub.models.GemmaBackbone(
        vocabulary_size=40,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
    )
    return _finish(model, _tokens())


def mistral():
    hub = _hub()
    model = hub.models.MistralBackbone(
        vocabulary_size=40,
        num_layers=2,
        num_query_heads=4,
        hidden_dim=16,
        intermediate_dim=32,
        num_key_value_heads=2,
        sliding_window=8,
    )
    return _finish(model, _tokens())


def gpt2():
    hub = _hub()
    model = hub.models.GPT2Backbone(
        vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    return _finish(model, _tokens())


def distilbert():
    hub = _hub()
    model = hub.models.DistilBertBackbone(
        vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    return _finish(model, _tokens())


def t5():  # encoder-decoder
    hub = _hub()
    model = hub.models.T5Backbone(vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16)
    rng = np.random.default_rng(0)
    x = {
        "encoder_token_ids": rng.integers(1, 40, (2, 8)).astype("int32"),
        "encoder_padding_mask": np.ones((2, 8), "int32"),
        "decoder_token_ids": rng.integers(1, 40, (2, 6)).astype("int32"),
        "decoder_padding_mask": np.ones((2, 6), "int32"),
    }
    return _finish(model, x)


def bart():
    hub = _hub()
    model = hub.models.BartBackbone(
        vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    rng = np.random.default_rng(1)
    x = {
        "encoder_token_ids": rng.integers(1, 40, (2, 8)).astype("int32"),
        "encoder_padding_mask": np.ones((2, 8), "int32"),
        "decoder_token_ids": rng.integers(1, 40, (2, 6)).astype("int32"),
        "decoder_padding_mask": np.ones((2, 6), "int32"),
    }
    return _finish(model, x)


def vit():  # vision transformer
    hub = _hub()
    model = hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16
    )
    return _finish(model, np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32"))


def resnet():  # convolutional vision backbone with BatchNormalization
    hub = _hub()
    model = hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 8],  # KerasHub requires 64 first
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(16, 16, 3),
    )
    return _finish(model, np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32"))


def bert_tokenizer():
    return _hub().models.BertTokenizer(vocabulary=list(VOCAB))


def bert_classifier():  # a task with a preprocessor and an in-memory-vocabulary tokenizer
    hub = _hub()
    preprocessor = hub.models.BertTextClassifierPreprocessor(bert_tokenizer(), sequence_length=8)
    backbone = hub.models.BertBackbone(
        vocabulary_size=len(VOCAB), num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8
    )
    model = hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=preprocessor)
    text = np.array(["the quick brown fox", "a lazy dog jumps"])
    x = {k: np.asarray(v) for k, v in model.preprocessor(tf.constant(text)).items()}  # builds the packer lazily
    model.compile(optimizer=keras.optimizers.Adam(1e-3))  # the task's own loss
    y = np.array([0, 1])
    model.train_on_batch(text, y)  # a task's fit/train_on_batch runs its preprocessor
    return model, x, y, text


def gpt2_causal_lm():  # a task without a preprocessor
    hub = _hub()
    backbone = hub.models.GPT2Backbone(
        vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    model = hub.models.GPT2CausalLM(backbone, preprocessor=None)
    x = _tokens()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))  # the task's own loss
    y = np.roll(x["token_ids"], -1, axis=1)
    model.train_on_batch(x, y)
    return model, x, y, x


def gpt2_tokenizer():  # byte-pair merges as well as a vocabulary
    return _hub().models.GPT2Tokenizer(vocabulary=dict(GPT2_VOCAB), merges=list(GPT2_MERGES))


MODELS: dict[str, Callable[[], tuple]] = {
    "bert": bert,
    "llama": llama,
    "gemma": gemma,
    "mistral": mistral,
    "gpt2": gpt2,
    "distilbert": distilbert,
    "t5": t5,
    "bart": bart,
    "vit": vit,
    "resnet": resnet,
    "bert_classifier": bert_classifier,
    "gpt2_causal_lm": gpt2_causal_lm,
}
# Run in the default suite; the rest are marked slow.
FAST = ("bert", "llama", "bert_classifier")
