"""Graph-to-graph optimizations, each a pure function `Graph -> Graph` in its own module.

`optimize` runs `PIPELINE` in order. The order matters:
  drop_identity    first, so no Identity hides a pattern from the passes below;
  fold_constants   before the folds, so weights computed by constant subgraphs are plain constants;
  fold_qdq         next: turns ONNX QDQ groups into int8 ops and folds the weights of the groups left float into
                   float constants, which fold_batchnorm / fold_affine need; before fuse_activation, so a relu
                   between an op and its Quantize becomes the int8 op's clamp (fuse_activation skips int8);
  fuse_layer_norm  after fold_constants and fold_qdq (its gamma and beta must be float constants); before the
                   folds, so fold_affine cannot take the normalization's last Mul/Add into something else;
  fuse_lp_normalize the same for F.normalize's ReduceL2 / Clip / Expand / Div;
  fold_batchnorm   before fuse_activation: BatchNorm sits between a conv and its activation;
  fold_affine      the same for constant Mul/Add/Sub/Div after a conv (how tf2onnx exports BatchNorm);
  fuse_pad         before fuse_activation (independent of it, but keeps conv rewrites together);
  repeat_as_resize before alias_reshape, which marks the Reshapes of the chains it replaces;
  recurrent_last_step before alias_reshape too: the Slices of a sequence's final step it turns into Reshapes;
  fuse_activation  after fold_batchnorm has removed the BatchNorm between conv and activation;
  alias_reshape    last: it only marks/simplifies Reshapes, which the passes above never look through.
Every pass deep-copies its input, so the caller's graph is never changed.
"""
from __future__ import annotations

from ..ir import Graph
from .alias_reshape import alias_reshape
from .drop_identity import drop_identity
from .fold_affine import fold_affine
from .fold_batchnorm import fold_batchnorm
from .fold_constants import fold_constants
from .fold_qdq import fold_qdq
from .fuse_activation import fuse_activation
from .fuse_layer_norm import fuse_layer_norm
from .fuse_lp_normalize import fuse_lp_normalize
from .fuse_pad import fuse_pad
from .recurrent_last_step import recurrent_last_step
from .repeat_as_resize import repeat_as_resize

PIPELINE = (drop_identity, fold_constants, fold_qdq, fuse_layer_norm, fuse_lp_normalize, fold_batchnorm,
            fold_affine, fuse_pad, repeat_as_resize, recurrent_last_step, fuse_activation, alias_reshape)


def optimize(g: Graph) -> Graph:
    """Run every pass of PIPELINE in order, drop unused tensors and validate the result."""
    for p in PIPELINE:
        g = p(g)
    g.remove_unused_tensors()
    g.validate()
    return g


def describe() -> list[tuple[str, str]]:
    """(name, one-line description) for each pass, in pipeline order (for `tinyc passes` / docs)."""
    return [(p.__name__, (p.__doc__ or "").strip().split("\n")[0]) for p in PIPELINE]


__all__ = ["PIPELINE", "optimize", "describe"] + [p.__name__ for p in PIPELINE]
