"""Every IR op is defined once (tinyc/ops/): walk the definitions, require each facet or an explicit None, and
check that the tables the rest of tinyc reads are derived from them."""
import inspect

import pytest

from tinyc import ir, ops
from tinyc.ops import MEMORY_KINDS, QUANTIZE_POLICIES, REGISTRY, OpDef
from tinyc.passes.fold_qdq import _RULES as QDQ_RULES
from tinyc.passes.fuse_activation import FUSABLE
from tinyc.quant import ptq
from tinyc.schedule import buffers, overlap

# Ops no kernel ever sees: a pass removes them before codegen.
FOLDED_AWAY = {"BatchNorm"}
# Ops the interpreter has no rule for (it computes on real values; quantization lives on tensors).
NO_FLOAT_MEANING = {"Quantize", "Dequantize"}
# Ops the planner makes, whose C codegen/fused_block.py renders from their layers' own kernels.
PLANNED = {"FusedBlock"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_facet_is_given(name):
    d = REGISTRY[name]
    assert isinstance(d, OpDef) and d.name == name
    assert d.signature.strip(), "say what the inputs, outputs and attributes are"
    assert (d.evaluate is None) == (name in NO_FLOAT_MEANING), "the numpy meaning is the op's definition"
    if name not in FOLDED_AWAY | PLANNED:
        assert d.float_kernel or d.int8_kernel, "an op that reaches codegen needs a kernel"
    for facet in ("evaluate", "check", "float_kernel", "int8_prepare", "int8_kernel", "int8_fast"):
        value = getattr(d, facet)
        assert value is None or callable(value), f"{facet} is a function or None (unsupported)"
    assert d.int8_fast is None or d.int8_kernel is not None, "a fast kernel needs its reference twin"
    assert d.int8_prepare is None or d.int8_kernel is not None
    assert d.memory in MEMORY_KINDS and d.quantize in QUANTIZE_POLICIES
    assert d.quantize is None or d.int8_kernel is not None, "the quantizer only makes ops it has int8 kernels for"
    assert (d.quantize == "fixed") == (d.fixed_quant is not None)
    assert d.qdq_rule is None or d.qdq_rule in QDQ_RULES
    assert not d.one_image or d.memory == "windowed"


def test_each_op_module_documents_itself():
    for module in ops.MODULES:
        assert inspect.getdoc(module), f"{module.__name__} needs a docstring saying what its ops compute"
        assert module.DEFINITIONS, module.__name__


def test_registries_are_derived_from_the_definitions():
    assert ir.OPS == tuple(REGISTRY)
    assert set(ir.IMAGE_OPS) == {n for n, d in REGISTRY.items() if d.one_image}
    assert set(overlap.ELEMENTWISE) == {n for n, d in REGISTRY.items() if d.memory == "elementwise"}
    assert set(overlap.WINDOWED) == {n for n, d in REGISTRY.items() if d.memory == "windowed"}
    assert set(buffers.ALIAS_OPS) == {n for n, d in REGISTRY.items() if d.memory == "alias"}
    assert set(FUSABLE) == {n for n, d in REGISTRY.items() if d.fuses_activation}
    assert set(ptq.QUANTIZABLE) == {n for n, d in REGISTRY.items() if d.quantize}
    assert set(ptq.SHARED) == {n for n, d in REGISTRY.items() if d.quantize == "shared"}


def test_an_op_name_is_defined_once():
    names = [d.name for m in ops.MODULES for d in m.DEFINITIONS]
    assert len(names) == len(set(names))
