"""Checks an `mpq export` graph with ONNX's checker and shape inference, runs
it in onnxruntime on the reference set `mpq export --reference` wrote, and
explains every difference.

usage: onnx_check.py MODEL.onnx REFERENCE_DIR [--atol A] [--rtol R] [--tie T]

The tolerance: every logit within atol + rtol * |logit| of mpq's, except on
images where an activation integer differs between the two runtimes, and
where it first does (in forward order), every differing integer is one step
apart and its float input lies within T (relative) of a rounding boundary
(half a step) in the graph run op by op in torch: a rounding tie that one
ulp of convolution or BatchNorm arithmetic decides. The top-1 must agree on
every other image, and where it does not, be explained the same way.

Prints a YAML report on stdout; exit 0 when everything agrees or is so
explained, 1 otherwise, 77 (skip) without onnx, onnxruntime or torch.
"""
import argparse
import sys

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper
except ImportError as e:  # the test skips with the reason
    print(f"skip: {e}", file=sys.stderr)
    sys.exit(77)


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def run_torch(model, inits, x, layout):
    """The graph op by op in torch (float32, CPU), in mpq's memory layout
    (metadata mpq.layout) so that the convolutions run mpq's kernels: every
    value by name."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    v = {"input": torch.from_numpy(x)}
    for k, t in inits.items():
        v[k] = torch.from_numpy(t.astype(np.float32))  # a writable copy
    for n in model.graph.node:
        a, i = attrs(n), [v[k] for k in n.input]
        if n.op_type == "DequantizeLinear":
            y = (i[0].to(torch.float32) - (i[2] if len(i) > 2 else 0)) * i[1]
            if y.dim() == 4:
                y = y.contiguous(memory_format=fmt)
        elif n.op_type == "QuantizeLinear":
            hi = 65535 if model_types[n.input[2]] == onnx.TensorProto.UINT16 else 255
            y = torch.clamp(torch.round(i[0] / i[1]) + i[2], 0, hi)
        elif n.op_type == "Clip":
            y = torch.clamp(i[0], i[1].item(), i[2].item())
        elif n.op_type == "Conv":
            p = a.get("pads", [0, 0, 0, 0])
            y = F.conv2d(i[0], i[1], i[2] if len(i) > 2 else None, a.get("strides", [1, 1]), p[:2],
                         a.get("dilations", [1, 1]), a.get("group", 1)).contiguous(memory_format=fmt)
        elif n.op_type == "BatchNormalization":
            y = F.batch_norm(i[0], i[3], i[4], i[1], i[2], False, 0.0, a.get("epsilon", 1e-5))
        elif n.op_type == "Relu":
            y = torch.relu(i[0])
        elif n.op_type == "Add":
            y = i[0] + i[1]
        elif n.op_type == "MaxPool":
            y = F.max_pool2d(i[0], a["kernel_shape"], a["strides"], a["pads"][:2])
        elif n.op_type == "GlobalAveragePool":
            y = F.adaptive_avg_pool2d(i[0], 1)
        elif n.op_type == "Flatten":
            y = i[0].flatten(a.get("axis", 1))
        elif n.op_type == "Gemm":
            y = F.linear(i[0], i[1] if a.get("transB", 0) else i[1].t(), i[2] if len(i) > 2 else None)
        else:
            raise SystemExit(f"onnx_check: no torch rule for {n.op_type}")
        v[n.output[0]] = y
    return v


model_types = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("reference")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--tie", type=float, default=1e-5)
    a = ap.parse_args()
    torch.set_num_threads(2)

    m = onnx.load(a.model)
    onnx.checker.check_model(m, full_check=True)
    # strict: the inferred shapes and types must agree with the value_info mpq wrote.
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    layout = {p.key: p.value for p in m.metadata_props}.get("mpq.layout", "nchw")
    for t in m.graph.initializer:
        model_types[t.name] = t.data_type

    x = np.load(f"{a.reference}/inputs.npy")
    want = np.load(f"{a.reference}/logits.npy")
    labels = np.load(f"{a.reference}/labels.npy")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(["logits"], {"input": x[i:i + 500]})[0] for i in range(0, len(x), 500)])
    assert got.shape == want.shape, (got.shape, want.shape)

    err = np.abs(got - want)
    off_rows = np.nonzero((err > a.atol + a.rtol * np.abs(want)).any(1))[0]
    disagree = np.nonzero(got.argmax(1) != want.argmax(1))[0]
    suspects = sorted(set(off_rows.tolist()) | set(disagree.tolist()))

    # Every suspect image: where do the activation integers first differ, and is it a tie?
    quant = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    del probe.graph.output[:]
    outs = [n.output[0] for n in quant]
    for name in outs:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    psess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ties, unexplained, torch_vs_mpq = 0, [], 0.0
    for lo in range(0, len(suspects), 100):
        idx = np.array(suspects[lo:lo + 100])
        ort_codes = dict(zip(outs, psess.run(outs, {"input": x[idx]})))
        with torch.no_grad():
            tv = run_torch(m, inits, x[idx], layout)
        torch_vs_mpq = max(torch_vs_mpq, float(np.abs(tv["logits"].numpy() - want[idx]).max()))
        for k, img in enumerate(idx):
            explained = False
            for n in quant:
                oc = ort_codes[n.output[0]][k].astype(np.int64)
                tc = tv[n.output[0]][k].numpy().astype(np.int64)
                diff = oc != tc
                if not diff.any():
                    continue
                r = (tv[n.input[0]][k].numpy() / inits[n.input[1]])[diff]
                frac = np.abs(r - np.floor(r) - 0.5)
                explained = bool((np.abs(oc - tc)[diff] == 1).all() and (frac <= a.tie * np.maximum(1, np.abs(r))).all())
                break
            if explained:
                ties += 1
            else:
                unexplained.append(int(img))

    top_got, top_want = got.argmax(1), want.argmax(1)
    print(f"model: {a.model}")
    print(f"images: {len(x)}")
    print(f"opset: {m.opset_import[0].version}")
    print("checker: passed")
    print("shape_inference: passed (strict)")
    print(f"tolerance: {{atol: {a.atol}, rtol: {a.rtol}, tie: {a.tie}}}")
    print(f"max_abs_diff: {err.max():.6g}")
    print(f"median_abs_diff: {np.median(err):.6g}")
    print(f"images_within_tolerance: {len(x) - len(off_rows)}")
    print(f"images_outside_tolerance: {len(off_rows)}")
    print(f"top1_onnxruntime: {100.0 * (top_got == labels).mean():.4f}")
    print(f"top1_mpq: {100.0 * (top_want == labels).mean():.4f}")
    print(f"top1_disagreements: {len(disagree)}")
    print(f"explained_by_rounding_ties: {ties}")
    print(f"unexplained: {len(unexplained)}{' ' + str(unexplained[:10]) if unexplained else ''}")
    print(f"graph_in_torch_vs_mpq_max_abs_diff: {torch_vs_mpq:.6g}")
    ok = not unexplained
    print(f"verdict: {'agree' if ok else 'DISAGREE'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
