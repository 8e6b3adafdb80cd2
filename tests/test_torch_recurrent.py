"""PyTorch's nn.LSTM / nn.GRU / nn.RNN exported to ONNX (TorchScript exporter and the dynamo one), with the
Transpose / Squeeze / Concat / Reshape patterns they wrap around ONNX's LSTM/GRU/RNN (batch_first, num_layers=2,
bidirectional, the final states as outputs), compiled by tinyc and checked against onnxruntime with `verify`.
TINYC_FULL=1 runs every combination; the default run the two-layer bidirectional batch-first LSTM (TorchScript
exporter) and GRU (dynamo)."""
import itertools
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from tinyc.verify import verify  # noqa: E402

FULL = bool(os.environ.get("TINYC_FULL"))
LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class Recurrent(nn.Module):
    """A recurrent layer (input 6, hidden 8) and a Linear head on its sequence; also returns the final hidden state."""

    def __init__(self, kind: str, batch_first: bool, layers: int, bidirectional: bool):
        super().__init__()
        self.kind = kind
        self.rnn = LAYERS[kind](6, 8, num_layers=layers, batch_first=batch_first, bidirectional=bidirectional)
        self.head = nn.Linear(16 if bidirectional else 8, 3)

    def forward(self, x):
        y, state = self.rnn(x)
        return self.head(y), state[0] if self.kind == "lstm" else state


def export(tmp_path, kind, batch_first, layers, bidirectional, dynamo) -> str:
    torch.manual_seed(19)
    model = Recurrent(kind, batch_first, layers, bidirectional).eval()
    x = torch.randn((2, 5, 6) if batch_first else (5, 2, 6))
    path = str(tmp_path / f"{kind}.onnx")
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(model, (x,), path, input_names=["input"], dynamo=True, verbose=False)
        else:
            torch.onnx.export(model, (x,), path, input_names=["input"], opset_version=17, dynamo=False)
    return path


DEFAULT = [("lstm", True, 2, True, False), ("gru", True, 2, True, True)]    # one exporter each
ALL = list(itertools.product(LAYERS, (True, False), (1, 2), (False, True), (False, True)))


@pytest.mark.parametrize("kind,batch_first,layers,bidirectional,dynamo", ALL if FULL else DEFAULT,
                         ids=lambda v: str(v))
def test_torch_recurrent_matches_onnxruntime(tmp_path, kind, batch_first, layers, bidirectional, dynamo):
    report = verify(export(tmp_path, kind, batch_first, layers, bidirectional, dynamo), samples=2)
    assert report["ok"], [(o["max_abs_err"], o["tolerance"]) for o in report["outputs"]]


class WithStates(nn.Module):
    """A two-layer bidirectional batch-first nn.LSTM / nn.GRU called with its initial states (model inputs,
    [layers * directions, B, H], which the exporters slice per layer), returning the sequence and final states."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.rnn = LAYERS[kind](6, 8, num_layers=2, batch_first=True, bidirectional=True)

    def forward(self, x, h0, c0=None):
        if self.kind == "lstm":
            y, (h, c) = self.rnn(x, (h0, c0))
            return y, h, c
        return self.rnn(x, h0)


@pytest.mark.skipif(not FULL, reason="TINYC_FULL=1")
@pytest.mark.parametrize("kind,dynamo", list(itertools.product(("lstm", "gru"), (False, True))), ids=str)
def test_initial_states_as_model_inputs(tmp_path, kind, dynamo):
    torch.manual_seed(19)
    states = (torch.randn(4, 2, 8),) * (2 if kind == "lstm" else 1)
    path = str(tmp_path / f"{kind}.onnx")
    with torch.no_grad():
        torch.onnx.export(WithStates(kind).eval(), (torch.randn(2, 5, 6), *states), path, dynamo=dynamo,
                          opset_version=None if dynamo else 17, verbose=False)
    report = verify(path, samples=2)
    assert report["ok"], [(o["max_abs_err"], o["tolerance"]) for o in report["outputs"]]


@pytest.mark.skipif(not FULL, reason="QEMU runs: TINYC_FULL=1")
@pytest.mark.parametrize("board_name", ["pico", "pico2"])     # Cortex-M0+ (mps2-an385), Cortex-M33 (mps2-an505)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_emulated_runs_match(tmp_path, kind, board_name):
    """A two-layer bidirectional batch-first nn.LSTM / nn.GRU (one sequence) under QEMU: the outputs equal the host
    build's and onnxruntime's; every MAC counted."""
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.run import run_emulated
    torch.manual_seed(19)
    model = Recurrent(kind, True, 2, True).eval()
    path = str(tmp_path / f"{kind}.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 10, 6),), path, input_names=["input"], opset_version=17,
                          dynamo=False)
    compiled = compile_model(path)
    r = run_emulated(compiled, load_board(board_name), path, str(tmp_path / "out"))
    assert r["outputs_match"], [(o["max_abs_diff_host"], o["max_abs_err_reference"]) for o in r["outputs"]]
    assert r["macs"] == compiled.library.macs and r["instructions"] > r["macs"]
