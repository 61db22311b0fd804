// The ONNX graph of a finetuned mixed-precision zoo network (mpq export).
#pragma once

#include <string>

#include <torch/types.h>

#include "export/onnx_graph.h"
#include "models/zoo.h"

namespace mpq::engine {

struct OnnxBuild {
  onnx_export::Graph graph;
  // The graph's arithmetic replayed in torch on the probe batch: the
  // integer weights times their scales, Clip + QuantizeLinear +
  // DequantizeLinear as ONNX defines them. Equal, up to rounding ties, to
  // the fake-quantized network's forward.
  torch::Tensor replay_logits;
};

// The graph of `net` (a network quantize_for_finetune made, in eval mode,
// on the CPU, float32) for inputs of probe's C x H x W. InputError for a
// full-precision or indicator-training network, and for bits `opset` cannot
// hold (naming the layer and the opset that can).
OnnxBuild build_onnx_graph(models::NetImpl& net, const std::string& arch, int opset, const torch::Tensor& probe);

// A float32 or int64 tensor as a NumPy .npy file (format 1.0, C order),
// replaced atomically.
void write_npy(const std::string& path, const torch::Tensor& t);

}  // namespace mpq::engine
