// Pickle writer: plain data as protocol 4 opcodes, without frames or memo.
#include <cstring>

#include "mpq/common/error.h"
#include "mpq/io/pickle.h"

namespace mpq::pickle {

namespace {

void put_le(std::string& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

void put_str(std::string& out, const std::string& s, uint8_t short_op, uint8_t long_op) {
  if (s.size() < 256) {
    out += static_cast<char>(short_op);
    put_le(out, s.size(), 1);
  } else {
    out += static_cast<char>(long_op);
    put_le(out, s.size(), long_op == 0x8d || long_op == 0x8e ? 8 : 4);
  }
  out += s;
}

void write_value(std::string& out, const Value& v, int depth) {
  MPQ_CHECK(depth < 1000, "pickle write: values nest deeper than 1000 levels");
  using K = Value::Kind;
  switch (v.kind()) {
    case K::kNone: out += 'N'; break;
    case K::kBool: out += static_cast<char>(v.as_bool() ? 0x88 : 0x89); break;
    case K::kInt: {
      const int64_t i = v.as_int();
      if (i >= 0 && i < 256) {
        out += 'K';
        put_le(out, i, 1);
      } else if (i >= INT32_MIN && i <= INT32_MAX) {
        out += 'J';
        put_le(out, static_cast<uint32_t>(i), 4);
      } else {
        out += static_cast<char>(0x8a);  // LONG1, 8 bytes two's complement
        out += static_cast<char>(8);
        put_le(out, static_cast<uint64_t>(i), 8);
      }
      break;
    }
    case K::kFloat: {
      const double d = v.as_double();
      uint64_t bits;
      std::memcpy(&bits, &d, sizeof bits);
      out += 'G';
      for (int i = 7; i >= 0; --i) out += static_cast<char>((bits >> (8 * i)) & 0xff);  // big-endian
      break;
    }
    case K::kStr: put_str(out, v.as_str(), 0x8c, 'X'); break;
    case K::kBytes: put_str(out, v.as_bytes(), 'C', 'B'); break;
    case K::kList:
    case K::kSet: {
      out += v.kind() == K::kList ? ']' : static_cast<char>(0x8f);
      const auto& items = v.items();
      for (size_t start = 0; start < items.size(); start += 1000) {  // batches, as Python writes them
        out += '(';
        for (size_t i = start; i < items.size() && i < start + 1000; ++i) write_value(out, items[i], depth + 1);
        out += v.kind() == K::kList ? 'e' : static_cast<char>(0x90);
      }
      break;
    }
    case K::kTuple: {
      out += '(';
      for (const auto& x : v.items()) write_value(out, x, depth + 1);
      out += 't';
      break;
    }
    case K::kDict: {
      out += '}';
      const auto& e = v.dict_items();
      for (size_t start = 0; start < e.size(); start += 1000) {
        out += '(';
        for (size_t i = start; i < e.size() && i < start + 1000; ++i) {
          write_value(out, e[i].first, depth + 1);
          write_value(out, e[i].second, depth + 1);
        }
        out += 'u';
      }
      break;
    }
    default:
      throw InputError(detail::concat("pickle write: cannot write a ", v.kind_name(), " value"));
  }
}

}  // namespace

std::string write(const Value& v) {
  std::string out;
  out += static_cast<char>(0x80);
  out += static_cast<char>(4);
  write_value(out, v, 0);
  out += '.';
  return out;
}

}  // namespace mpq::pickle
