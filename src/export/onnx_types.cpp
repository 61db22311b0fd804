// The torch-free and protobuf-free part of the ONNX description: types, containers, packing.
#include "export/onnx_graph.h"

#include <algorithm>
#include <cmath>

#include "mpq/common/error.h"

namespace mpq::onnx_export {

const char* type_name(int t) {
  switch (t) {
    case kFloat: return "float";
    case kUint8: return "uint8";
    case kInt8: return "int8";
    case kUint16: return "uint16";
    case kInt16: return "int16";
    case kInt64: return "int64";
    case kUint4: return "uint4";
    case kInt4: return "int4";
    case kUint2: return "uint2";
    case kInt2: return "int2";
    default: return "unknown";
  }
}

int type_bits(int t) {
  switch (t) {
    case kUint2: case kInt2: return 2;
    case kUint4: case kInt4: return 4;
    case kUint8: case kInt8: return 8;
    case kUint16: case kInt16: return 16;
    case kInt64: return 64;
    default: return 32;
  }
}

int ir_version(int opset) {
  // onnx.helper.VERSION_TABLE: the IR version each opset arrived with.
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  if (opset <= 22) return 10;
  return 11;
}

int weight_container(int bits, int opset) {
  if (bits <= 2 && opset >= 25) return kInt2;
  if (bits <= 4 && opset >= 21) return kInt4;
  if (bits <= 8) return kInt8;
  if (bits <= 16 && opset >= 21) return kInt16;
  return 0;
}

int act_container(int bits, int opset) {
  // QuantizeLinear's own saturation gives the range [0, 2^b - 1] only for
  // b = the container's width; below it a Clip gives the exact LSQ range, so
  // the 8-bit container serves every b <= 8 (4- and 2-bit outputs would
  // need the same Clip and save nothing at run time).
  if (bits <= 8) return kUint8;
  if (bits <= 16 && opset >= 21) return kUint16;
  return 0;
}

namespace {

bool is_signed(int t) { return t == kInt2 || t == kInt4 || t == kInt8 || t == kInt16; }

}  // namespace

std::string pack_integers(const std::vector<int32_t>& values, int t) {
  const int bits = type_bits(t);
  MPQ_ASSERT(bits <= 16, "pack_integers: ", type_name(t), " is not a small integer type");
  const int64_t lo = is_signed(t) ? -(int64_t{1} << (bits - 1)) : 0;
  const int64_t hi = is_signed(t) ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
  std::string out;
  if (bits >= 8) {
    out.resize(values.size() * static_cast<size_t>(bits / 8));
    for (size_t i = 0; i < values.size(); ++i) {
      MPQ_ASSERT(values[i] >= lo && values[i] <= hi, "pack_integers: ", values[i], " does not fit ", type_name(t));
      const auto u = static_cast<uint32_t>(values[i]);
      out[i * (bits / 8)] = static_cast<char>(u & 0xff);
      if (bits == 16) out[i * 2 + 1] = static_cast<char>((u >> 8) & 0xff);
    }
    return out;
  }
  const size_t per_byte = static_cast<size_t>(8 / bits);
  out.assign((values.size() + per_byte - 1) / per_byte, '\0');
  const uint32_t mask = (1u << bits) - 1;
  for (size_t i = 0; i < values.size(); ++i) {
    MPQ_ASSERT(values[i] >= lo && values[i] <= hi, "pack_integers: ", values[i], " does not fit ", type_name(t));
    const uint32_t code = static_cast<uint32_t>(values[i]) & mask;
    out[i / per_byte] = static_cast<char>(static_cast<uint8_t>(out[i / per_byte]) | (code << (bits * (i % per_byte))));
  }
  return out;
}

std::vector<int32_t> unpack_integers(const std::string& raw, int t, size_t count) {
  const int bits = type_bits(t);
  MPQ_ASSERT(bits <= 16, "unpack_integers: ", type_name(t), " is not a small integer type");
  const size_t need = bits >= 8 ? count * static_cast<size_t>(bits / 8) : (count * static_cast<size_t>(bits) + 7) / 8;
  MPQ_CHECK(raw.size() == need, "ONNX initializer of ", count, " ", type_name(t), " values holds ", raw.size(),
            " bytes, expected ", need);
  std::vector<int32_t> out(count);
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(raw[i])); };
  for (size_t i = 0; i < count; ++i) {
    uint32_t u;
    if (bits == 16) u = byte(2 * i) | (byte(2 * i + 1) << 8);
    else if (bits == 8) u = byte(i);
    else u = (byte(i * static_cast<size_t>(bits) / 8) >> (bits * (i % static_cast<size_t>(8 / bits)))) & ((1u << bits) - 1);
    int32_t v = static_cast<int32_t>(u);
    if (is_signed(t) && (u >> (bits - 1)) != 0) v -= int32_t{1} << bits;
    out[i] = v;
  }
  return out;
}

}  // namespace mpq::onnx_export
