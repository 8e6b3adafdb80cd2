"""TFLite resource variables -> the IR's streaming state (docs/streaming-state.md).

The converter's streaming form (`experimental_enable_resource_variables`, a tf.Variable assigned in the model's
function; what TFLite Micro runs for streaming models):
  CALL_ONCE(init subgraph)        runs its subgraph before the first inference only: VAR_HANDLE + ASSIGN_VARIABLE
                                  of constants there are the variables' initial values (evaluated here, at compile
                                  time; a variable it does not assign starts at zeros);
  VAR_HANDLE -> resource          names a variable by (container, shared_name): the same pair in another subgraph
                                  is the same variable;
  READ_VARIABLE(resource) -> x    the variable's value: before any assignment in this inference, the state tensor
                                  (its value from the inference before); after one, the assigned tensor itself;
  ASSIGN_VARIABLE(resource, v)    v is the variable's value from here on; the last assignment of an inference is
                                  the state's next value.
No IR node comes from these operators: a read is the state tensor or an assigned tensor, an assignment moves the
next value. A variable the main subgraph never reads has no effect on the outputs and is dropped.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError


def _new() -> dict:
    """A variable: its IR state tensor (once read), the IR tensor assigned in this inference, its initial value."""
    return dict(state=None, value=None, initial=None)


def _key(opts) -> str:
    if opts is None:
        return "/"
    container = opts.container.decode() if isinstance(opts.container, bytes) else (opts.container or "")
    shared = opts.sharedName.decode() if isinstance(opts.sharedName, bytes) else (opts.sharedName or "")
    return f"{container}/{shared}" if container else shared


def _variable(cv, resource: int) -> tuple[str, dict]:
    key = cv.resources.get(resource)
    if key is None:
        raise TinycError(f"{cv.where()}: its resource '{cv.tname(resource)}' does not come from a VAR_HANDLE of this "
                         "subgraph; tinyc reads resource variables named by VAR_HANDLE only")
    return key, cv.variables.setdefault(key, _new())


def var_handle(cv, opts, ins):
    cv.resources[cv.out] = _key(opts)


def read_variable(cv, opts, ins):
    key, var = _variable(cv, ins[0])
    if var["value"] is not None:        # assigned earlier in this inference: the assigned value
        cv.names[cv.out] = var["value"]
        return
    if var["state"] is None:
        t = cv.tensor(cv.out)
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        if any(d < 0 for d in shape) or (t.shapeSignature is not None and any(int(d) < 0 for d in t.shapeSignature)):
            raise TinycError(f"{cv.where()}: variable '{key}' has a dynamic shape {list(t.shapeSignature)}; a "
                             "streaming state needs a static shape")
        dtype = cv.runtime_dtype(cv.out)
        quant = cv.quant(cv.out) if dtype in ("int8", "int16") else None    # int16: a 16x8 activation
        initial = var["initial"]
        if initial is not None and tuple(initial.shape) != shape:
            raise TinycError(f"{cv.where()}: variable '{key}' is {list(shape)} but CALL_ONCE assigns it a "
                             f"{list(initial.shape)} value; the .tflite file is inconsistent")
        name = cv.g.unique_name(key.replace("/", "_") or "variable")    # the variable's name, in C and reports
        cv.g.add_state(name, shape, dtype, initial=None if initial is None else initial.astype(dtype),
                       quant=quant, source_name=key)
        var["state"] = name
    cv.names[cv.out] = var["state"]


def assign_variable(cv, opts, ins):
    key, var = _variable(cv, ins[0])
    var["value"] = cv.x(ins[1])


def call_once(cv, opts, ins):
    """Evaluate the init subgraph: VAR_HANDLE and ASSIGN_VARIABLE of constant tensors (its only operators in the
    converter's output)."""
    from .tflite_import import _op_name
    index = int(opts.initSubgraphIndex) if opts is not None else -1
    if not 0 < index < len(cv.model.subgraphs):
        raise TinycError(f"{cv.where()}: its init subgraph {index} does not exist; the .tflite file is corrupt")
    sg = cv.model.subgraphs[index]
    handles = {}
    for k, op in enumerate(sg.operators or []):
        kind = _op_name(cv.S, cv.model, op)
        op_ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        op_outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        if not all(0 <= i < len(sg.tensors) for i in op_ins + op_outs):
            raise TinycError(f"{cv.where()}: operator #{k} of init subgraph {index} refers to a tensor that does not "
                             "exist; the .tflite file is corrupt")
        if kind == "VAR_HANDLE" and len(op_outs) == 1:
            handles[op_outs[0]] = _key(op.builtinOptions)
        elif kind == "ASSIGN_VARIABLE" and len(op_ins) == 2 and op_ins[0] in handles:
            value = cv.buffer_value(sg.tensors[op_ins[1]])
            if value is None:
                raise TinycError(f"{cv.where()}: init subgraph {index} assigns variable '{handles[op_ins[0]]}' a "
                                 "computed value; tinyc takes initial values that are constants")
            var = cv.variables.setdefault(handles[op_ins[0]], _new())
            var["initial"] = np.array(value)
        else:
            raise TinycError(f"{cv.where()}: init subgraph {index} has a {kind} operator (#{k}); tinyc evaluates "
                             "init subgraphs of VAR_HANDLE and ASSIGN_VARIABLE of constants")


def finish_variables(cv) -> None:
    """After the main subgraph: each variable it reads is a state tensor whose next value is its last assignment
    (the state itself when it is never assigned)."""
    for key, var in cv.variables.items():
        if var["state"] is None:
            continue
        value = var["value"] or var["state"]
        s, v = cv.g.tensors[var["state"]], cv.g.tensors[value]
        if (s.shape, s.dtype) != (v.shape, v.dtype):
            raise TinycError(f"TFLite variable '{key}' is {s.dtype} {list(s.shape)} but is assigned a {v.dtype} "
                             f"{list(v.shape)} value ('{value}'); the .tflite file is inconsistent")
        if s.quant is not None and v.quant is not None and not (np.array_equal(s.quant.scale, v.quant.scale)
                                                                and np.array_equal(s.quant.zero_point,
                                                                                   v.quant.zero_point)):
            raise TinycError(f"TFLite variable '{key}' is read with scale {float(s.quant.scale):g} / zero point "
                             f"{int(s.quant.zero_point)} but assigned '{value}' with scale {float(v.quant.scale):g} / "
                             f"{int(v.quant.zero_point)}; tinyc needs one quantization for a state")
        cv.g.state[var["state"]] = value


VARIABLE_OPS = {"VAR_HANDLE": var_handle, "READ_VARIABLE": read_variable, "ASSIGN_VARIABLE": assign_variable,
                "CALL_ONCE": call_once}
# no outputs (CALL_ONCE, ASSIGN_VARIABLE) or a resource (VAR_HANDLE): not the one IR tensor of other rules
VARIABLE_OUTPUTS = frozenset({"CALL_ONCE", "ASSIGN_VARIABLE"})
