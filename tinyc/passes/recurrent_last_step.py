"""recurrent_last_step: a recurrent layer whose sequence is read only at its final step gives that step alone.

TFLiteConverter writes a Keras LSTM with return_sequences=False as an LSTM of the whole sequence and a
STRIDED_SLICE of its last step (the frontend: a Slice, then a Reshape dropping the time axis), so the [B,T,H]
sequence takes the arena for one step's worth of use: 3,136 of the KWS LSTM's 4,412 bytes. When every reader of
an LSTM / GRU / RNN node's sequence is a Slice of the step computed last (t = T-1, or t = 0 for a reverse layer)
over the whole batch and hidden axes, and the sequence is not a model output or a state's next value, the node
gives `output="last_h"` ([B,H]) and each Slice becomes a Reshape of it to [B,1,H] (a free view). The values are
the same, int8 included: a Slice copies bytes and the LSTM's final h is the sequence's last step.
"""
from __future__ import annotations

from ..ir import Graph

RECURRENT = ("LSTM", "GRU", "RNN")


def _reads_final_step(g: Graph, node, reader) -> bool:
    if reader.op != "Slice" or reader.inputs[0] != node.outputs[0]:
        return False
    B, T, H = g.tensors[node.outputs[0]].shape
    final = 0 if node.attrs.get("reverse") else T - 1
    a = reader.attrs
    return (tuple(a["sizes"]) == (B, 1, H) and a["starts"][0] == 0 and a["starts"][1] == final
            and a["starts"][2] == 0 and a["steps"][0] == 1 and a["steps"][2] == 1)


def recurrent_last_step(g: Graph) -> Graph:
    """A recurrent layer whose sequence is read only at its final step computes only its final h."""
    g = g.copy()
    live_out = g.live_out()
    for node in g.nodes:
        if node.op not in RECURRENT or node.attrs.get("output") != "sequence" or node.outputs[0] in live_out:
            continue
        readers = g.consumers(node.outputs[0])
        if not readers or not all(_reads_final_step(g, node, r) for r in readers):
            continue
        seq = g.tensors[node.outputs[0]]
        B, _, H = seq.shape
        seq.shape = (B, H)
        node.attrs["output"] = "last_h"
        for r in readers:
            r.op, r.attrs = "Reshape", {}
    return g
