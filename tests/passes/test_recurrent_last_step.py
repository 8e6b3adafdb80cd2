"""recurrent_last_step: a recurrent layer whose sequence is read only at the step it computes last gives that step
alone (output last_h), its Slices becoming Reshapes; any other read of the sequence leaves it alone. The
interpreter gives the same values before and after; the converter's int8 LSTM (return_sequences=False) stays
bit-exact (tests/test_int8_lstm.py 'last') with a smaller arena."""
import numpy as np
import pytest
from pass_checks import checked

from tinyc.ir import Graph
from tinyc.ops.recurrent import GATES, STATE_INPUTS, default_activations
from tinyc.passes import recurrent_last_step

RNG = np.random.default_rng(11)


def recurrent_graph(op="LSTM", B=2, T=5, I=3, H=4, reverse=False, reads=((None, 1),), cell_output=False):
    """x[B,T,I] -> op (sequence) -> one Slice per `reads` (start of the time axis, None: the final step; size) ->
    Reshape -> outputs."""
    g = Graph("rnn")
    g.add_tensor("x", (B, T, I))
    G = GATES[op]
    ins = ["x", g.add_const("w", RNG.standard_normal((G * H, I)) * 0.5),
           g.add_const("r", RNG.standard_normal((G * H, H)) * 0.5)]
    shapes = dict(b=(G * H,), rb=(G * H,), h0=(B, H), c0=(B, H), p=(3 * H,))
    ins += [g.add_const(k, RNG.standard_normal(shapes[k]) * 0.3) for k in STATE_INPUTS[op]]
    g.add_tensor("seq", (B, T, H))
    outs = ["seq"]
    if cell_output:
        g.add_tensor("c", (B, H))
        outs.append("c")
    g.add_node(op, ins, outs, output="sequence", reverse=reverse, activations=default_activations(op),
               **(dict(cell_output=True) if cell_output else {}))
    final = 0 if reverse else T - 1
    g.outputs = ["c"] if cell_output else []
    for k, (start, size) in enumerate(reads):
        g.add_tensor(f"step{k}", (B, size, H))
        g.add_tensor(f"out{k}", (B, size * H))
        g.add_node("Slice", ["seq"], [f"step{k}"], starts=[0, final if start is None else start, 0],
                   sizes=[B, size, H], steps=[1, 1, 1])
        g.add_node("Reshape", [f"step{k}"], [f"out{k}"])
        g.outputs.append(f"out{k}")
    g.inputs = ["x"]
    g.validate()
    return g


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("reverse", [False, True])
def test_a_sequence_read_only_at_its_final_step_becomes_the_final_h(op, reverse):
    g = recurrent_graph(op, reverse=reverse, reads=((None, 1), (None, 1)))
    out = checked(recurrent_last_step, g)
    node = out.nodes[0]
    assert node.attrs["output"] == "last_h" and out.tensors["seq"].shape == (2, 4)
    assert [n.op for n in out.nodes[1:]] == ["Reshape"] * 4


def test_the_cell_output_stays():
    out = checked(recurrent_last_step, recurrent_graph("LSTM", cell_output=True))
    assert out.nodes[0].attrs["output"] == "last_h" and out.nodes[0].outputs == ["seq", "c"]


@pytest.mark.parametrize("reads", [((0, 1),), ((3, 2),), ((None, 1), (1, 1))], ids=["first", "two", "another"])
def test_other_reads_of_the_sequence_keep_it(reads):
    g = recurrent_graph("GRU", reads=reads)
    out = checked(recurrent_last_step, g)
    assert out.summary() == g.summary()


def test_a_reverse_layers_last_input_position_is_not_its_final_step():
    g = recurrent_graph("LSTM", reverse=True, reads=((4, 1),))
    assert checked(recurrent_last_step, g).summary() == g.summary()


def test_a_sequence_that_is_a_model_output_stays():
    g = recurrent_graph("RNN")
    g.outputs.append("seq")
    assert checked(recurrent_last_step, g).summary() == g.summary()
