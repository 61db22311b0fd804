// A torch-free description of an ONNX graph, its writer (through ONNX's own
// protobuf classes) and a reader that recomputes a quantized graph's size and
// BitOPs from what the file holds.
//
// The graph mpq writes (docs/FORMATS.md, "ONNX export"): input "input"
// float [batch, C, H, W], output "logits" float [batch, classes]; every conv
// and the fc take weights from DequantizeLinear(integer initializer, scale);
// every quantized input is Clip(0, p * s) -> QuantizeLinear(s, 0) ->
// DequantizeLinear(s, 0), with p = 2^b - 1 (no Clip where the container's
// own range is [0, p]); the first conv reads the float image. Metadata
// "mpq.weight_bits.<layer>" holds each layer's weight bit-width; every
// intermediate value has its shape in value_info.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mpq/search/search.h"

namespace mpq::onnx_export {

// ONNX TensorProto.DataType codes mpq writes.
enum DataType : int {
  kFloat = 1,
  kUint8 = 2,
  kInt8 = 3,
  kUint16 = 4,
  kInt16 = 5,
  kInt64 = 7,
  kUint4 = 21,
  kInt4 = 22,
  kUint2 = 25,
  kInt2 = 26,
};
const char* type_name(int data_type);  // "int4", "uint8", ...
int type_bits(int data_type);          // 4 for int4, 8 for uint8, 32 for float

// The opsets the writer targets; INT4/UINT4/16-bit quantization from 21,
// INT2/UINT2 from 25.
constexpr int kMinOpset = 13, kMaxOpset = 25, kDefaultOpset = 21;
// The ONNX IR version a model of `opset` declares (the oldest that has it).
int ir_version(int opset);

// The smallest container for a signed (weights) or unsigned (activations)
// b-bit integer at `opset`; 0 when the opset has none.
int weight_container(int bits, int opset);
int act_container(int bits, int opset);

// Integer values as an initializer's raw_data in `data_type`: little-endian,
// 4-bit types two to a byte and 2-bit types four (the lowest bits first).
std::string pack_integers(const std::vector<int32_t>& values, int data_type);
std::vector<int32_t> unpack_integers(const std::string& raw, int data_type, size_t count);

struct Initializer {
  std::string name;
  int data_type = kFloat;
  std::vector<int64_t> dims;
  std::string raw;  // raw_data
};

struct Attribute {
  enum class Kind { kInt, kInts, kFloat } kind = Kind::kInt;
  std::string name;
  int64_t i = 0;
  std::vector<int64_t> ints;
  float f = 0;
};

struct Node {
  std::string op, name;
  std::vector<std::string> inputs, outputs;
  std::vector<Attribute> attributes;
};

struct ValueInfo {
  std::string name;
  int data_type = kFloat;
  std::vector<int64_t> dims;  // -1: the symbolic batch dimension
};

struct Graph {
  std::string name;
  int opset = kDefaultOpset;
  std::vector<ValueInfo> inputs, outputs, values;
  std::vector<Node> nodes;
  std::vector<Initializer> initializers;
  std::vector<std::pair<std::string, std::string>> metadata;
};

// Serializes the model and replaces `path` atomically. RuntimeError when it
// cannot be written (nothing is left behind).
void write_model(const Graph& g, const std::string& path);

// One conv or fc of a graph as read back from its file.
struct LayerSummary {
  std::string name;
  std::string op;            // "Conv" or "Gemm"
  int weight_bits = 0;       // the metadata's, checked against the stored integers
  int weight_container = 0;  // DataType of the stored integers
  int act_bits = 0;          // from the input's Clip bound or container; 0: a float input
  int act_container = 0;
  int64_t params = 0;         // weight elements
  int64_t packed_bytes = 0;   // ceil(params x weight_bits / 8)
  int64_t stored_bytes = 0;   // the integer initializer's raw bytes
};

struct GraphSummary {
  int opset = 0;
  int64_t ir_version = 0;
  int64_t file_bytes = 0;
  std::vector<LayerSummary> layers;  // forward order
  search::Report report;             // size and BitOPs, counted as the search counts them
  std::vector<std::string> searchable, excepted;  // layer names
};

// Reads an mpq-written ONNX file back and recomputes every layer's bits and
// the model's size and BitOPs from its nodes, initializers and shapes.
// InputError when the file is not such a graph.
GraphSummary summarize_model(const std::string& path);

}  // namespace mpq::onnx_export
