"""Transformer blocks, stacks and the three families: decoder-only, encoder-only, encoder-decoder.

`model.apply({'params': params}, batch)` returns float32 logits [batch, length, vocab] for the
family's output stream. Batch features follow the seqio / T5X names (see docs/design.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.models import attention as attn
from jaxlm.models.config import ModelConfig
from jaxlm.models.layers import ACTIVATION_FNS, DenseGeneral, Embed, Kernel, Mlp, Norm, constrain
from jaxlm.models.positions import RelativePositionBias, rotary_angles, sinusoidal

Array = jax.Array
Batch = Mapping[str, Array]
ACTIVATION_AXES = ("activation_batch", "activation_length", "activation_embed")

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Block(nn.Module):
    """One layer: self-attention, optional cross-attention, MLP; each a residual sublayer."""

    cfg: ModelConfig
    has_cross: bool
    deterministic: bool
    decode: bool
    causal: bool = False  # self-attention's mask is plain causal (+ padding / packing)

    @nn.compact
    def __call__(self, x: Array, mask: Array, bias: Array | None,
                 rotary: tuple[Array, Array] | None, encoded: Array | None,
                 cross_mask: Array | None, decode_index: Array | None,
                 segment_ids: Array | None) -> tuple[Array, None]:
        cfg = self.cfg

        def residual(name: str, fn, x: Array) -> Array:
            pre = cfg.norm_position == "pre"
            h = fn(Norm(cfg, name=f"{name}_norm")(x) if pre else x)
            x = x + nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
            return x if pre else Norm(cfg, name=f"{name}_norm")(x)

        kw = dict(deterministic=self.deterministic, decode=self.decode, decode_index=decode_index)
        x = residual("self_attention", lambda h: attn.MultiHeadAttention(
            cfg, causal=self.causal, name="self_attention")(h, None, mask, bias, rotary,
                                                             segment_ids=segment_ids, **kw), x)
        if self.has_cross:
            x = residual("cross_attention", lambda h: attn.MultiHeadAttention(
                cfg, is_cross=True, name="cross_attention")(h, encoded, cross_mask, **kw), x)
        x = residual("mlp", lambda h: Mlp(cfg, name="mlp")(h, self.deterministic), x)
        return constrain(x, ACTIVATION_AXES), None


class Stack(nn.Module):
    """Embeddings, a stack of blocks (scanned or unrolled, optionally rematerialized), final norm."""

    cfg: ModelConfig
    num_layers: int
    causal: bool
    has_cross: bool
    token_embed: Embed

    @nn.compact
    def __call__(self, tokens: Array, *, valid: Array, segment_ids: Array | None = None,
                 positions: Array | None = None, causal_attention: Array | None = None,
                 token_types: Array | None = None, encoded: Array | None = None,
                 cross_mask: Array | None = None, deterministic: bool = True,
                 decode: bool = False) -> Array:
        cfg = self.cfg
        batch, length = tokens.shape
        decode_index = kernel_segments = None
        explicit_positions = positions is not None or decode
        if decode:
            mask, positions, decode_index, q_pos, k_pos = self._decode_state(batch, length,
                                                                             positions)
        else:
            if positions is None:
                positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
            mask = attn.self_attention_mask(valid, segment_ids, self.causal, causal_attention)
            if causal_attention is None:  # the mask as segment ids, for the splash kernel
                kernel_segments = attn.kernel_segment_ids(valid, segment_ids)
            q_pos = k_pos = jnp.arange(length)
        self._check_length(k_pos.shape[0])

        x = self.token_embed(tokens)
        if cfg.position == "learned":
            x = x + Embed(cfg.max_len, cfg, axes=(None, "embed"), name="position_embed")(positions)
        elif cfg.position == "sinusoidal":
            x = x + sinusoidal(positions, cfg.d_model).astype(x.dtype)
        if cfg.num_token_types:
            types = jnp.zeros_like(tokens) if token_types is None else token_types
            x = x + Embed(cfg.num_token_types, cfg, axes=(None, "embed"),
                          name="token_type_embed")(types)
        if cfg.embedding_norm:
            x = Norm(cfg, name="embedding_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        x = constrain(x, ACTIVATION_AXES)

        rotary = None
        if cfg.position == "rotary":
            rotary = rotary_angles(positions if explicit_positions else None, length,
                                   cfg.head_size, cfg.rotary_base)
        bias = None
        if cfg.position == "relative":
            bias = RelativePositionBias(cfg, bidirectional=not self.causal,
                                        name="relpos_bias")(q_pos, k_pos)

        block = Block
        if cfg.remat_policy != "none" and not decode:  # decoding has no backward pass
            block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat_policy],
                             prevent_cse=not cfg.scan_layers)
        args = (mask, bias, rotary, encoded, cross_mask, decode_index, kernel_segments)
        block_kw = dict(cfg=cfg, has_cross=self.has_cross, deterministic=deterministic,
                        decode=decode, causal=self.causal and causal_attention is None)
        if cfg.scan_layers:
            scanned = nn.scan(block, variable_axes={"params": 0, "cache": 0},
                              split_rngs={"params": True, "dropout": True},
                              in_axes=(nn.broadcast,) * len(args), length=self.num_layers,
                              metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = scanned(**block_kw, name="layers")(x, *args)
        else:
            for i in range(self.num_layers):
                x, _ = block(**block_kw, name=f"layers_{i}")(x, *args)
        if cfg.final_norm:
            x = Norm(cfg, name="final_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)

    def _decode_state(self, batch: int, length: int, positions: Array | None):
        """Cache bookkeeping for autoregressive decoding: slot index, filled slots, mask."""
        # At init the input spans the whole cache, which sizes it.
        filled = self.variable("cache", "filled", jnp.zeros, (batch, length), jnp.bool_)
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        cache_len = filled.value.shape[1]
        start = index.value
        if not self.is_initializing():
            filled.value = jax.lax.dynamic_update_slice(
                filled.value, jnp.ones((batch, length), jnp.bool_), (0, start))
            index.value = start + length
        q_pos = start + jnp.arange(length)
        k_pos = jnp.arange(cache_len)
        if positions is None:
            positions = jnp.broadcast_to(q_pos, (batch, length))
        mask = filled.value[:, None, None, :]
        if self.causal:
            mask = mask & attn.causal_mask(q_pos, k_pos)
        return mask, positions, start, q_pos, k_pos

    def _check_length(self, length: int) -> None:
        if self.cfg.position == "learned" and length > self.cfg.max_len:
            raise ValueError(f"Sequence length {length} exceeds model.max_len={self.cfg.max_len}, "
                             "the longest that learned positions allow.")


class OutputHead(nn.Module):
    """Hidden states -> float32 vocabulary logits (tied or untied; BERT's MLM transform)."""

    cfg: ModelConfig
    token_embed: Embed

    @nn.compact
    def __call__(self, x: Array, return_projection: bool = False) -> Any:
        """Logits; or with `return_projection` (features, matrix, bias) such that the logits are
        features @ matrix.T (tied: matrix is the [vocab, d_model] embedding) or features @ matrix
        (untied: the [d_model, vocab] lm_head kernel), + bias when not None."""
        cfg = self.cfg
        if cfg.mlm_head_transform:
            x = DenseGeneral((cfg.d_model,), ("embed", "mlp"), cfg, use_bias=True,
                             name="transform")(x)
            x = Norm(cfg, name="transform_norm")(ACTIVATION_FNS[cfg.mlm_head_activation](x))
        if cfg.tie_embeddings:
            if cfg.scale_tied_logits:
                x = x * cfg.d_model ** -0.5
            matrix = self.token_embed.embedding
        else:
            matrix = Kernel((cfg.d_model,), (cfg.vocab_size,), ("embed", "vocab"), cfg,
                            name="lm_head")()
        bias = None
        if cfg.output_bias:
            bias = self.param(
                "output_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                (cfg.vocab_size,), cfg.weight_dtype)
        x = x.astype(cfg.compute_dtype)
        if return_projection:
            return x, matrix, bias
        spec = "...d,vd->...v" if cfg.tie_embeddings else "...d,dv->...v"
        logits = jnp.einsum(spec, x, matrix.astype(cfg.compute_dtype))
        if bias is not None:
            logits = logits + bias
        logits = logits.astype(jnp.float32)
        return constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))


class ClassifierHead(nn.Module):
    """BERT's pooler (dense + tanh) and a linear classifier, at every position: float32 logits
    [batch, length, classes]. A loss reads them where its weights say an example starts ([CLS]),
    which works for packed rows too."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.cfg
        x = jnp.tanh(DenseGeneral((cfg.d_model,), ("embed", "mlp"), cfg, use_bias=True,
                                  name="pooler")(x))
        logits = DenseGeneral((cfg.classifier_classes,), ("mlp", None), cfg, use_bias=True,
                              name="classifier")(x)
        return logits.astype(jnp.float32)


REQUIRED_FEATURES = {
    "decoder": ("decoder_input_tokens",),
    "encoder": ("encoder_input_tokens",),
    "encoder_decoder": ("encoder_input_tokens", "decoder_input_tokens"),
}


def check_batch(cfg: ModelConfig, batch: Batch) -> None:
    """Refuses a batch missing a feature the family needs, naming it."""
    for name in REQUIRED_FEATURES[cfg.family]:
        if name not in batch:
            raise ValueError(f"Batch feature {name!r} is required by a {cfg.family} model; "
                             f"the batch has: {sorted(batch)}.")


def encoder_valid(batch: Batch) -> Array:
    """Real (non-padding) encoder tokens: segment id > 0 when packed, else token id != pad (0)."""
    if "encoder_segment_ids" in batch:
        return batch["encoder_segment_ids"] > 0
    return batch["encoder_input_tokens"] > 0


def decoder_valid(batch: Batch) -> Array:
    """Real decoder tokens. The input stream starts with pad as BOS (T5X), so padding is read
    from the segment ids or the targets, never from decoder_input_tokens."""
    if "decoder_segment_ids" in batch:
        return batch["decoder_segment_ids"] > 0
    if "decoder_target_tokens" in batch:
        return batch["decoder_target_tokens"] > 0
    return jnp.ones(batch["decoder_input_tokens"].shape, jnp.bool_)


class _Family(nn.Module):
    cfg: ModelConfig

    def setup(self) -> None:
        self.token_embed = Embed(self.cfg.vocab_size, self.cfg, name="token_embed")
        self.head = OutputHead(self.cfg, self.token_embed, name="head")


class DecoderOnly(_Family):
    """GPT-style decoder: causal (or prefix-LM) self-attention over decoder_input_tokens."""

    def setup(self) -> None:
        super().setup()
        self.decoder = Stack(self.cfg, self.cfg.num_layers, causal=True, has_cross=False,
                             token_embed=self.token_embed, name="decoder")

    def __call__(self, batch: Batch, *, deterministic: bool = True, decode: bool = False,
                 return_hidden: bool = False) -> Array:
        """Logits, or with `return_hidden` the final hidden states [batch, length, d_model]
        (after the final norm, before the output head; e.g. for a classification head)."""
        check_batch(self.cfg, batch)
        x = self.decoder(batch["decoder_input_tokens"], valid=decoder_valid(batch),
                         segment_ids=batch.get("decoder_segment_ids"),
                         positions=batch.get("decoder_positions"),
                         causal_attention=batch.get("decoder_causal_attention"),
                         deterministic=deterministic, decode=decode)
        return x if return_hidden else self.head(x)


class EncoderOnly(_Family):
    """BERT-style encoder: bidirectional self-attention over encoder_input_tokens."""

    def setup(self) -> None:
        super().setup()
        self.encoder = Stack(self.cfg, self.cfg.num_layers, causal=False, has_cross=False,
                             token_embed=self.token_embed, name="encoder")
        if self.cfg.classifier_classes:
            self.classifier = ClassifierHead(self.cfg, name="classifier_head")

    def __call__(self, batch: Batch, *, deterministic: bool = True, decode: bool = False,
                 return_hidden: bool = False) -> Array:
        """Logits, or with `return_hidden` the final hidden states (see DecoderOnly). With
        `classifier_classes`, `classifier_logits` gives the classification head's logits."""
        if decode:
            raise ValueError("An encoder-only model has no autoregressive decode mode.")
        check_batch(self.cfg, batch)
        x = self.encoder(batch["encoder_input_tokens"], valid=encoder_valid(batch),
                         segment_ids=batch.get("encoder_segment_ids"),
                         positions=batch.get("encoder_positions"),
                         token_types=batch.get("encoder_token_types"),
                         deterministic=deterministic)
        if self.cfg.classifier_classes and self.is_initializing():
            self.classifier(x)  # creates its parameters
        return x if return_hidden else self.head(x)


class EncoderDecoder(_Family):
    """T5-style encoder-decoder sharing one token embedding between the stacks and the head."""

    def setup(self) -> None:
        super().setup()
        cfg = self.cfg
        self.encoder = Stack(cfg, cfg.num_layers, causal=False, has_cross=False,
                             token_embed=self.token_embed, name="encoder")
        self.decoder = Stack(cfg, cfg.decoder_layers, causal=True, has_cross=True,
                             token_embed=self.token_embed, name="decoder")

    def encode(self, batch: Batch, *, deterministic: bool = True) -> Array:
        """Encoder hidden states [batch, encoder_length, d_model]."""
        if "encoder_input_tokens" not in batch:
            raise ValueError("Batch feature 'encoder_input_tokens' is required by an "
                             f"encoder_decoder model; the batch has: {sorted(batch)}.")
        return self.encoder(batch["encoder_input_tokens"], valid=encoder_valid(batch),
                            segment_ids=batch.get("encoder_segment_ids"),
                            positions=batch.get("encoder_positions"),
                            deterministic=deterministic)

    def decode(self, batch: Batch, encoded: Array | None, *, deterministic: bool = True,
               decode: bool = False, return_hidden: bool = False) -> Array:
        """Decoder logits given encoder states. In decode mode pass `encoded` on the first step
        only: cross-attention caches its keys and values. The batch still carries
        encoder_input_tokens (or encoder_segment_ids) for the cross-attention padding mask."""
        check_batch(self.cfg, batch)
        dec_segments = None if decode else batch.get("decoder_segment_ids")
        dec_valid = (jnp.ones(batch["decoder_input_tokens"].shape, jnp.bool_) if decode
                     else decoder_valid(batch))
        cross_mask = attn.cross_attention_mask(dec_valid, encoder_valid(batch), dec_segments,
                                               batch.get("encoder_segment_ids"))
        x = self.decoder(batch["decoder_input_tokens"], valid=dec_valid, segment_ids=dec_segments,
                         positions=batch.get("decoder_positions"), encoded=encoded,
                         cross_mask=cross_mask, deterministic=deterministic, decode=decode)
        return x if return_hidden else self.head(x)

    def __call__(self, batch: Batch, *, deterministic: bool = True, decode: bool = False,
                 return_hidden: bool = False) -> Array:
        """Decoder logits, or with `return_hidden` the decoder's final hidden states."""
        check_batch(self.cfg, batch)
        encoded = self.encode(batch, deterministic=deterministic)
        return self.decode(batch, encoded, deterministic=deterministic, decode=decode,
                           return_hidden=return_hidden)


def head_projection(model: nn.Module, hidden: Array) -> tuple[Array, Array, Array | None]:
    """For `model.apply(..., hidden, method=head_projection)`: the output head's (features,
    matrix, bias), which the chunked loss projects a chunk at a time (see OutputHead)."""
    return model.head(hidden, return_projection=True)


def output_logits(model: nn.Module, hidden: Array) -> Array:
    """For `model.apply(..., hidden, method=output_logits)`: the output head's logits."""
    return model.head(hidden)


def classifier_logits(model: nn.Module, hidden: Array) -> Array:
    """For `model.apply(..., hidden, method=classifier_logits)`: the classification head's
    logits [batch, length, classes] (an encoder with model.classifier_classes > 0)."""
    return model.classifier(hidden)


FAMILY_MODULES = {"decoder": DecoderOnly, "encoder": EncoderOnly,
                  "encoder_decoder": EncoderDecoder}


def build_model(cfg: ModelConfig) -> nn.Module:
    """The Flax module for cfg.family."""
    return FAMILY_MODULES[cfg.family](cfg)


def dummy_batch(cfg: ModelConfig, batch_size: int = 1, length: int = 8,
                decoder_length: int | None = None) -> dict[str, Array]:
    """All-ones int32 features of the right names and shapes, for init and shape inference."""
    enc = jnp.ones((batch_size, length), jnp.int32)
    dec = jnp.ones((batch_size, decoder_length or length), jnp.int32)
    if cfg.family == "encoder":
        return {"encoder_input_tokens": enc}
    if cfg.family == "decoder":
        return {"decoder_input_tokens": dec}
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec}


def init_params(model: nn.Module, rng: Array, batch: Batch | None = None) -> Any:
    """Boxed (logically annotated) params; wrap in jax.jit with out_shardings to init sharded."""
    batch = dummy_batch(model.cfg) if batch is None else batch
    return model.init(rng, batch)["params"]


def param_count(params: Any) -> int:
    """Number of parameters (works on arrays and on jax.eval_shape's ShapeDtypeStructs)."""
    return sum(int(x.size) for x in jax.tree.leaves(nn.meta.unbox(params)))


def init_decode_cache(model: nn.Module, batch_size: int, max_length: int,
                      encoder_length: int | None = None) -> Any:
    """A zeroed KV cache for `max_length` decoder positions (and, for encoder-decoder models, the
    cross-attention keys of `encoder_length` encoder positions)."""
    cfg = model.cfg
    batch = dummy_batch(cfg, batch_size, encoder_length or max_length, max_length)

    def init():
        if cfg.family == "encoder_decoder":
            encoded = jnp.zeros((batch_size, encoder_length or max_length, cfg.d_model),
                                cfg.compute_dtype)
            return model.init(jax.random.key(0), batch, encoded, decode=True,
                              method=model.decode)["cache"]
        return model.init(jax.random.key(0), batch, decode=True)["cache"]

    shapes = jax.eval_shape(init)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _is_layer_key(key: str) -> bool:
    return key.startswith("layers_") and key[len("layers_"):].isdigit()


def stack_layers(tree: Any) -> Any:
    """Unrolled `layers_i` subtrees -> one `layers` subtree with a leading layer axis (scan form)."""
    if not isinstance(tree, Mapping):
        return tree
    layer_keys = sorted((k for k in tree if _is_layer_key(k)), key=lambda k: int(k[7:]))
    out = {k: stack_layers(v) for k, v in tree.items() if not _is_layer_key(k)}
    if layer_keys:
        out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *[tree[k] for k in layer_keys])
    return out


def unstack_layers(tree: Any) -> Any:
    """The inverse of stack_layers: a scanned `layers` subtree -> `layers_i` subtrees."""
    if not isinstance(tree, Mapping):
        return tree
    out = {k: unstack_layers(v) for k, v in tree.items() if k != "layers"}
    if "layers" in tree:
        num = jax.tree.leaves(tree["layers"])[0].shape[0]
        for i in range(num):
            out[f"layers_{i}"] = jax.tree.map(lambda x: x[i], tree["layers"])
    return out
