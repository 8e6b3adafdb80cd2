"""The canonical streaming export: a PyTorch nn.LSTM / nn.GRU run one frame at a time, its hidden (and cell) state
graph inputs and outputs of the ONNX model, paired with `--state` and verified frame by frame against onnxruntime
fed its own outputs back (docs/streaming-state.md)."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


class Streaming(torch.nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.rnn = getattr(torch.nn, kind)(10, 16, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x, h0, c0=None):
        if self.kind == "LSTM":
            y, (h, c) = self.rnn(x, (h0, c0))
            return self.head(y[:, -1]), h, c
        y, h = self.rnn(x, h0)
        return self.head(y[:, -1]), h


def export(tmp_path, kind: str, dynamic_batch: bool = False) -> tuple[str, dict]:
    torch.manual_seed(0)
    m = Streaming(kind).eval()
    x, h = torch.randn(1, 1, 10), torch.zeros(2, 1, 16)
    args, ins, outs = (x, h), ["x", "h0"], ["y", "hn"]
    if kind == "LSTM":
        args, ins, outs = (x, h, torch.zeros(2, 1, 16)), ins + ["c0"], outs + ["cn"]
    axes = {n: {0 if n in ("x", "y") else 1: "batch"} for n in ins + outs} if dynamic_batch else None
    path = str(tmp_path / f"{kind.lower()}_stream.onnx")
    torch.onnx.export(m, args, path, input_names=ins, output_names=outs, opset_version=17, dynamo=False,
                      dynamic_axes=axes)
    return path, dict(zip(ins[1:], outs[1:]))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torch_rnn_streamed_frame_by_frame_for_50_frames(tmp_path, kind):
    from tinyc.verify import verify
    path, pairs = export(tmp_path, kind)
    report = verify(path, samples=50, state=pairs)
    assert report["ok"] and report["frames"] == 50, report
    assert [r["bytes"] for r in report["state"]] == [128] * len(pairs)


def test_a_dynamic_batch_state_is_paired_and_fixed_by_input_shape(tmp_path):
    """Symbolic batch dimensions on the state input and output (PyTorch's dynamic_axes) pair up; --input-shape
    fixes them (state inputs included), and the reference starts from the state tinyc starts from."""
    from tinyc.verify import verify
    import onnx
    path, pairs = export(tmp_path, "GRU", dynamic_batch=True)
    model = onnx.load(path)          # the output's symbolic batch under another name than the input's
    next(o for o in model.graph.output if o.name == "hn").type.tensor_type.shape.dim[1].dim_param = "n_out"
    onnx.save(model, path)
    report = verify(path, samples=10, state=pairs, input_shapes=[(1, 1, 10), (2, 1, 16)])
    assert report["ok"] and report["frames"] == 10, report


@pytest.mark.skipif(not os.environ.get("TINYC_FULL"), reason="QEMU runs: TINYC_FULL=1")
@pytest.mark.parametrize("board_name", ["pico", "pico2"])
def test_torch_lstm_streamed_under_qemu(tmp_path, board_name):
    """50 frames in order on the M0+ and the M33 (QEMU): the host build's and onnxruntime's outputs."""
    from tinyc.boards import load_board
    from tinyc.compiler import compile_model
    from tinyc.firmware.run import run_emulated
    path, pairs = export(tmp_path, "LSTM")
    compiled = compile_model(path, state=pairs)
    xs = np.random.default_rng(1).standard_normal((50, 1, 1, 10)).astype(np.float32)
    r = run_emulated(compiled, load_board(board_name), path, str(tmp_path / "fw"), inputs=[xs], profile=False)
    assert r["outputs_match"], r
